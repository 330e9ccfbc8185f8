package server

import (
	"context"
	"net/http"
)

func (s *Server) startChat(ctx context.Context, mux *http.ServeMux) error { return nil }
