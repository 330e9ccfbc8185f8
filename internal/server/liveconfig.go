package server

import (
	"context"
	"net/http"
)

func (s *Server) startLiveConfig(ctx context.Context, mux *http.ServeMux) error { return nil }
