package allocation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
)

// AddToManager adds the allocation API to rally-operator's manager with one
// call: the allocator (fed by the manager's pod informer, writing with the
// manager's client) and its gRPC and REST servers on opts.GRPCAddr and
// opts.HTTPAddr. The servers run on every replica, leader or not:
// allocation needs no leader, the API server arbitrates between replicas.
// A readiness check "allocation" passes once the index is synced.
//
// In cmd/rally-operator, after the controller is set up:
//
//	if err := allocation.AddToManager(mgr, allocation.Options{Registerer: metrics.Registry}); err != nil { ... }
//
// (metrics.Registry is controller-runtime's, served on the manager's
// metrics endpoint.)
func AddToManager(mgr manager.Manager, opts Options) error {
	_, err := addToManager(mgr, opts)
	return err
}

func addToManager(mgr manager.Manager, opts Options) (*Allocator, error) {
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = ":7070"
	}
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = ":7071"
	}
	a, err := New(context.Background(), mgr.GetClient(), mgr.GetCache(), mgr.GetClient(), opts)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(&Server{Allocator: a}); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("allocation", func(*http.Request) error {
		if !a.Synced() {
			return errors.New("allocation index not synced")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return a, nil
}

// Server serves an Allocator over gRPC and REST on the addresses of its
// options; it is a manager.Runnable that needs no leader.
type Server struct {
	Allocator *Allocator
	// GRPCListener and HTTPListener, when set, are used instead of
	// listening on the option addresses (tests).
	GRPCListener net.Listener
	HTTPListener net.Listener
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then stops gracefully.
func (s *Server) Start(ctx context.Context) error {
	a := s.Allocator
	svc := NewService(a)
	gl, hl := s.GRPCListener, s.HTTPListener
	var err error
	if gl == nil && a.opts.GRPCAddr != "" {
		if gl, err = net.Listen("tcp", a.opts.GRPCAddr); err != nil {
			return fmt.Errorf("allocation: gRPC listen: %w", err)
		}
	}
	if hl == nil && a.opts.HTTPAddr != "" {
		if hl, err = net.Listen("tcp", a.opts.HTTPAddr); err != nil {
			if gl != nil {
				gl.Close()
			}
			return fmt.Errorf("allocation: HTTP listen: %w", err)
		}
	}
	errc := make(chan error, 2)
	var gs *grpc.Server
	if gl != nil {
		gs = grpc.NewServer(
			grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(a.opts.TracerProvider))),
			grpc.ChainUnaryInterceptor(svc.UnaryInterceptor()),
		)
		allocationv1.RegisterAllocationServiceServer(gs, svc)
		go func() { errc <- gs.Serve(gl) }()
		a.opts.Log.Info("allocation: gRPC serving", "addr", gl.Addr().String())
	}
	var hs *http.Server
	if hl != nil {
		mux := http.NewServeMux()
		mux.Handle(RESTPath, svc)
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
		a.opts.Log.Info("allocation: REST serving", "addr", hl.Addr().String(), "path", RESTPath)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hs != nil {
		hs.Shutdown(shutdown)
	}
	if gs != nil {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-shutdown.Done():
			gs.Stop()
		}
	}
	if serveErr != nil {
		return fmt.Errorf("allocation: serve: %w", serveErr)
	}
	return nil
}
