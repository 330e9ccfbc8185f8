package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc"

	lbv1 "github.com/rallyhq/rally/api/proto/rally/leaderboard/v1"
	"github.com/rallyhq/rally/internal/leaderboard"
)

// Leaderboards returns the leaderboard service, valid after Start. Its
// methods are the server-side API: game code submits to authoritative
// boards and creates boards through it.
func (s *Server) Leaderboards() *leaderboard.Service { return s.leaderboards }

// startLeaderboards wires leaderboards: the embedded or Redis backend, the
// boards file, the reset watcher and rally.leaderboard.v1 on gRPC and the
// socket.
func (s *Server) startLeaderboards(ctx context.Context, _ *http.ServeMux) error {
	cfg := s.cfg.Leaderboard
	var be leaderboard.Backend
	switch cfg.Store {
	case "redis":
		client, err := s.redisClient(ctx, "leaderboard.redis_url", cfg.RedisURL)
		if err != nil {
			return err
		}
		be = leaderboard.NewRedis(client, "rally:lb:")
	default:
		be = leaderboard.NewEmbedded(s.store, leaderboard.EmbeddedOptions{Registerer: s.Registry})
	}
	svc, err := leaderboard.New(ctx, leaderboard.Options{
		Backend: be, MaxMetadataBytes: cfg.MaxMetadataBytes, Registerer: s.Registry,
		TracerProvider: s.tracing.Provider, Log: s.log,
	})
	if err != nil {
		_ = be.Close()
		return err
	}
	// Registered after the store, so it stops before it: queued writes are
	// committed while the store is still open.
	s.onStop("leaderboard", func(context.Context) error { return svc.Close() })
	if cfg.Boards != "" {
		boards, err := leaderboard.LoadBoardsFile(cfg.Boards)
		if err != nil {
			return fmt.Errorf("leaderboard.boards: %s: %v", cfg.Boards, err)
		}
		for _, b := range boards {
			if _, err := svc.CreateBoard(ctx, b); err != nil {
				return fmt.Errorf("leaderboard.boards: %s: %v", cfg.Boards, err)
			}
		}
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(runCtx) }()
	s.onStop("leaderboard-resets", func(context.Context) error { stop(); <-done; return nil })

	var admins []string
	for _, a := range strings.Split(cfg.Admins, ",") {
		if a = strings.TrimSpace(a); a != "" {
			admins = append(admins, a)
		}
	}
	impl := leaderboard.NewGRPC(svc, caller, admins)
	s.grpcServices = append(s.grpcServices, func(g grpc.ServiceRegistrar) { lbv1.RegisterLeaderboardServiceServer(g, impl) })
	s.leaderboards = svc
	return nil
}
