package server

import (
	"context"
	"net/http"
)

func (s *Server) startLeaderboards(ctx context.Context, mux *http.ServeMux) error { return nil }
