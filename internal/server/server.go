// Package server is Rally's composition root: from the configuration it
// picks and starts each part in order (listeners, store, NATS, domains) and
// stops them in reverse. It wires; the parts do the work.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/internal/allocation/allocclient"
	"github.com/rallyhq/rally/internal/auth"
	"github.com/rallyhq/rally/internal/buildinfo"
	"github.com/rallyhq/rally/internal/bus"
	"github.com/rallyhq/rally/internal/chat"
	"github.com/rallyhq/rally/internal/config"
	rallyhealth "github.com/rallyhq/rally/internal/health"
	"github.com/rallyhq/rally/internal/leaderboard"
	"github.com/rallyhq/rally/internal/match"
	"github.com/rallyhq/rally/internal/node"
	"github.com/rallyhq/rally/internal/realtime"
	"github.com/rallyhq/rally/internal/reqlimit"
	"github.com/rallyhq/rally/internal/room"
	"github.com/rallyhq/rally/internal/roomevents"
	"github.com/rallyhq/rally/internal/store"
	"github.com/rallyhq/rally/internal/telemetry"
)

// Server is one running Rally process.
type Server struct {
	cfg    config.Config
	log    *slog.Logger
	health *rallyhealth.Checker
	// Registry is the Prometheus registry every domain registers into.
	Registry *prometheus.Registry

	httpLn, grpcLn  net.Listener
	grpcHealth      *health.Server
	tracing         *telemetry.Tracing
	bus             *bus.Bus
	store           store.Store
	nodeID          string
	auth            *auth.Service
	signingKey      []byte
	realtime        *realtime.Server
	events          *roomevents.Publisher
	adminRejections prometheus.Counter
	redis           map[string]*redis.Client // by URL, see redisClient
	// grpcServices register the domains' gRPC services when the server is
	// built.
	grpcServices []func(grpc.ServiceRegistrar)
	rooms        *room.Manager
	liveConfig   *liveConfigState
	chat         *chat.Service // see Chat
	leaderboards *leaderboard.Service
	// Handlers holds the authoritative room logic; register a studio's
	// game code here before Start.
	Handlers *room.Registry

	// stops run in reverse order on shutdown; each part appends its own as
	// it starts, so a failed start unwinds exactly what began.
	stops []stop
	errc  chan error
}

type stop struct {
	name string
	fn   func(ctx context.Context) error
}

// Addrs are the addresses the process actually listens on.
type Addrs struct {
	HTTP, GRPC string
	NATS       string // empty when NATS is external or its listener is off
}

// New returns a server for cfg; Start runs it.
func New(cfg config.Config, log *slog.Logger) *Server {
	s := &Server{
		cfg:      cfg,
		log:      log,
		health:   rallyhealth.NewChecker(2 * time.Second),
		Registry: telemetry.NewRegistry(buildinfo.Get()),
		Handlers: room.NewRegistry(),
		errc:     make(chan error, 4),
		adminRejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_http_admin_rejections_total",
			Help: "Requests to /admin/ endpoints refused: no or a wrong token, or a non-loopback caller without http.admin_token.",
		}),
	}
	s.Registry.MustRegister(s.adminRejections)
	return s
}

// Start brings the process up. Listeners are bound first, so a busy port
// fails start-up before anything is created on disk. On error, whatever had
// started is stopped again.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Timeout)
			defer cancel()
			s.runStops(stopCtx)
			// A listener whose server never started has no stop of its
			// own; closing one twice is harmless.
			for _, ln := range []net.Listener{s.httpLn, s.grpcLn} {
				if ln != nil {
					_ = ln.Close()
				}
			}
		}
	}()
	if s.httpLn, err = listen("http", s.cfg.HTTP.Addr); err != nil {
		return err
	}
	if s.grpcLn, err = listen("grpc", s.cfg.GRPC.Addr); err != nil {
		_ = s.httpLn.Close()
		return err
	}

	s.log.Info("listening", "http", s.httpLn.Addr().String(), "grpc", s.grpcLn.Addr().String())

	tracing, err := telemetry.NewTracerProvider(telemetry.TraceOptions{
		ServiceName:  s.cfg.Telemetry.ServiceName,
		OTLPEndpoint: s.cfg.Telemetry.OTLPEndpoint,
		OTLPInsecure: s.cfg.Telemetry.OTLPInsecure,
		SampleRatio:  s.cfg.Telemetry.SampleRatio,
	}, buildinfo.Get())
	if err != nil {
		return err
	}
	// Domains take tracers from the global provider; the listeners get it
	// explicitly so that several servers in one test process stay apart.
	s.tracing = tracing
	otel.SetTracerProvider(tracing.Provider)
	otel.SetTextMapPropagator(telemetry.Propagator())
	s.onStop("tracing", tracing.Shutdown)

	// HTTP serves from here on so /healthz answers during start-up;
	// /readyz stays 503 until Started.
	mux := http.NewServeMux()
	s.startHTTP(mux)

	if s.store, err = openStore(s.cfg); err != nil {
		return err
	}
	s.onStop("store", func(context.Context) error { return s.store.Close() })
	s.health.Add("store", s.store.Ping)

	s.bus, err = bus.Open(ctx, bus.Options{
		URL:            s.cfg.NATS.URL,
		ListenAddr:     s.cfg.NATS.Addr,
		StoreDir:       filepath.Join(s.cfg.DataDir, "jetstream"),
		SyncAlways:     s.cfg.NATS.SyncAlways,
		ConnectTimeout: s.cfg.NATS.ConnectTimeout,
		Name:           "rally",
		Logger:         s.log,
	})
	if err != nil {
		return err
	}
	s.onStop("nats", s.bus.Close)
	s.health.Add("nats", s.bus.Ping)

	if s.nodeID, err = node.ID(ctx, s.store); err != nil {
		return err
	}
	mux.Handle("GET /version", buildinfo.Handler(map[string]string{"node_id": s.nodeID}))

	if err := s.startRealtime(ctx, mux); err != nil {
		return err
	}
	if err := s.startMatch(ctx); err != nil {
		return err
	}
	if err := s.startLeaderboards(ctx, mux); err != nil {
		return err
	}
	if err := s.startChat(ctx, mux); err != nil {
		return err
	}
	if err := s.startLiveConfig(ctx, mux); err != nil {
		return err
	}

	s.startGRPC()
	s.health.Started()
	s.grpcHealth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a := s.Addrs()
	s.log.Info("rally ready", "http", a.HTTP, "grpc", a.GRPC, "nats", a.NATS,
		"nats_embedded", s.bus.Embedded(), "node_id", s.nodeID, "data_dir", s.cfg.DataDir,
		"version", buildinfo.Get().Version)
	return nil
}

// startRealtime wires sessions, the room-event stream, rooms and the
// WebSocket endpoint.
func (s *Server) startRealtime(ctx context.Context, mux *http.ServeMux) error {
	key, err := auth.ResolveKey(ctx, s.store, s.cfg.Auth.SigningKey)
	if err != nil {
		return err
	}
	s.signingKey = key
	revocations, err := auth.OpenRevocations(ctx, s.bus.JetStream(), auth.RevocationOptions{
		RefreshTTL: s.cfg.Auth.RefreshTTL, Log: s.log,
	})
	if err != nil {
		return err
	}
	s.onStop("auth-revocations", revocations.Close)
	if s.auth, err = auth.New(s.store, auth.Options{
		Key: key, SessionTTL: s.cfg.Auth.SessionTTL, RefreshTTL: s.cfg.Auth.RefreshTTL,
		Revocations: revocations,
	}, s.Registry, s.log); err != nil {
		return err
	}
	s.auth.RegisterHTTP(mux)
	mux.Handle("/admin/players/", s.admin(s.auth.AdminHandler()))

	events := roomevents.New(s.bus.JetStream(), roomevents.Options{
		Stream: s.cfg.Events.Stream, DeadLetter: s.cfg.Events.DeadLetter, MaxAge: s.cfg.Events.MaxAge,
		Retries: s.cfg.Events.Retries, RetryBackoff: s.cfg.Events.RetryBackoff,
		QueueSize: s.cfg.Events.QueueSize,
	}, s.Registry, s.log)
	if err := events.Start(ctx); err != nil {
		return err
	}
	s.events = events
	s.onStop("roomevents", events.Close)

	overflow, err := room.ParseOverflow(s.cfg.Rooms.InputOverflow)
	if err != nil {
		return err
	}
	s.rooms = room.NewManager(room.Config{
		DefaultTickRate: s.cfg.Rooms.DefaultTickRate, MaxPlayers: s.cfg.Rooms.MaxPlayers,
		EmptyTimeout: s.cfg.Rooms.EmptyTimeout, ReconnectHold: s.cfg.Realtime.ReconnectHold,
		InputQueue: s.cfg.Rooms.InputQueue, InputOverflow: overflow,
		PositionQuantum: s.cfg.Rooms.PositionQuantum,
	}, s.Handlers, events, s.Registry, s.log)
	s.onStop("rooms", s.rooms.Close)

	rt := realtime.New(s.rooms, func(token string) (room.Player, error) {
		sess, err := s.auth.Verify(token)
		return room.Player{UserID: sess.UserID, Username: sess.Username, SessionID: sess.SessionID}, err
	}, auth.BearerFromRequest, realtime.Limits{
		MaxFrameBytes: s.cfg.Realtime.MaxFrameBytes, MsgsPerSec: s.cfg.Realtime.MaxMsgsPerSec,
		Burst: s.cfg.Realtime.MsgBurst, SendQueue: s.cfg.Realtime.SendQueue,
		PingInterval: s.cfg.Realtime.PingInterval, PongTimeout: s.cfg.Realtime.PongTimeout,
		WriteTimeout: s.cfg.Realtime.WriteTimeout,
	}, s.Registry, s.log)
	rt.SetCallerContext(func(ctx context.Context, p room.Player) context.Context {
		return auth.NewContext(ctx, auth.Session{UserID: p.UserID, Username: p.Username, SessionID: p.SessionID})
	})
	mux.Handle("GET /ws", rt)
	s.realtime = rt
	// A session ended on any node closes its socket here.
	revocations.OnEnd(func(e auth.End) { rt.End(e.UserID, e.SessionID, e.Reason) })
	s.onStop("realtime", rt.Close)
	return nil
}

// startMatch wires the matchmaker: rules, the ticket pool, the engine's
// passes, and the gRPC MatchService.
func (s *Server) startMatch(ctx context.Context) error {
	rules, err := match.LoadRules(s.cfg.Match.Rules)
	if err != nil {
		return err
	}
	hub := match.NewHub()
	var pool match.Pool = match.NewMemoryPool()
	notify := hub.Notify
	if s.cfg.Match.Store == "redis" {
		client, err := s.redisClient(ctx, "match.redis_url", s.cfg.Match.RedisURL)
		if err != nil {
			return err
		}
		pool = match.NewRedisPool(client, "rally:match:")
		// Updates cross replicas over NATS: the replica that matches a
		// ticket is often not the one streaming it.
		nc := s.bus.Conn()
		sub, err := nc.Subscribe(match.RelaySubject+"*", func(m *nats.Msg) {
			if err := match.Receive(hub, m.Data); err != nil {
				s.log.Warn("bad relayed ticket update", "err", err)
			}
		})
		if err != nil {
			return fmt.Errorf("match: relay subscription: %w", err)
		}
		s.onStop("match-relay", func(context.Context) error { return sub.Unsubscribe() })
		notify = match.Relay{Publish: nc.Publish, Log: s.log}.Notify
	}
	results := match.NewResults(match.NewStoreRatings(s.store), match.NewResultTokens(s.signingKey), s.Registry, s.log)
	s.onStop("match-results", results.Close)
	allocator, err := s.matchAllocator(results)
	if err != nil {
		return err
	}
	engine := match.NewEngine(rules, pool, allocator, match.Options{
		Notify: notify, Registerer: s.Registry, Log: s.log, Shared: s.cfg.Match.Store == "redis",
	})
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); engine.Run(runCtx, s.cfg.Match.Interval) }()
	s.onStop("match", func(context.Context) error { stop(); <-done; return nil })
	svc := match.NewService(engine, hub, results, callerID)
	// Game servers report results with the match's result token.
	s.auth.SessionOptional(matchv1.MatchService_ReportResult_FullMethodName)
	s.grpcServices = append(s.grpcServices, func(g grpc.ServiceRegistrar) { matchv1.RegisterMatchServiceServer(g, svc) })
	s.realtime.SetMatchmaker(svc)
	return nil
}

// redisClient returns the Redis client for url, connected and checked;
// domains configured with the same URL share one client (and one pool of
// connections). key names the setting in errors.
func (s *Server) redisClient(ctx context.Context, key, url string) (*redis.Client, error) {
	if c, ok := s.redis[url]; ok {
		return c, nil
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	client := redis.NewClient(opts)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("%s: redis at %s: %w", key, opts.Addr, err)
	}
	if s.redis == nil {
		s.redis = map[string]*redis.Client{}
	}
	s.redis[url] = client
	s.onStop("redis "+opts.Addr, func(context.Context) error { return client.Close() })
	s.health.Add("redis "+opts.Addr, func(ctx context.Context) error { return client.Ping(ctx).Err() })
	return client, nil
}

// callerID and caller read the verified session that the gRPC interceptors
// and the socket put in a call's context, for the domains' services.
func callerID(ctx context.Context) (string, bool) {
	sess, ok := auth.FromContext(ctx)
	return sess.UserID, ok
}

func caller(ctx context.Context) (userID, username string, ok bool) {
	sess, ok := auth.FromContext(ctx)
	return sess.UserID, sess.Username, ok
}

// matchAllocator picks where matches are played: rooms on this node, or
// dedicated game servers from a rally-operator.
func (s *Server) matchAllocator(results *match.Results) (match.Allocator, error) {
	if s.cfg.Match.Allocator != "gameservers" {
		return match.RecordingAllocator{Allocator: match.RoomAllocator{Rooms: s.rooms, Connection: s.cfg.HTTP.Advertise}, Results: results}, nil
	}
	gs := s.cfg.Match.GameServers
	conn, err := grpc.NewClient(gs.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(s.tracing.Provider), otelgrpc.WithPropagators(telemetry.Propagator()))))
	if err != nil {
		return nil, fmt.Errorf("match.gameservers.address: %w", err)
	}
	s.onStop("match-gameservers", func(context.Context) error { return conn.Close() })
	return match.RecordingAllocator{
		Allocator: &allocclient.MatchAllocator{
			Allocator: allocclient.NewClient(conn, gs.Token), Namespace: gs.Namespace, Set: gs.Set,
			Port: gs.Port, RegionLabel: gs.RegionLabel, Timeout: gs.Timeout,
		},
		Results: results,
	}, nil
}

func listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			err = opErr.Err
		}
		return nil, fmt.Errorf("%s listen %s: %v", name, addr, err)
	}
	return ln, nil
}

func openStore(cfg config.Config) (store.Store, error) {
	switch cfg.Store.Driver {
	case "bolt":
		return store.OpenBolt(filepath.Join(cfg.DataDir, "rally.db"))
	default:
		return nil, fmt.Errorf("store: unknown driver %q", cfg.Store.Driver)
	}
}

func (s *Server) startHTTP(mux *http.ServeMux) {
	mux.Handle("GET /healthz", s.health.LiveHandler())
	mux.Handle("GET /readyz", s.health.ReadyHandler())
	if s.cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{
		Registry: s.Registry, EnableOpenMetrics: true,
	}))
	// Probes are not traced; neither is /ws, whose connect span is opened by
	// the realtime package with the player's ids.
	probes := map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/ws": true}
	handler := otelhttp.NewHandler(mux, "http",
		otelhttp.WithTracerProvider(s.tracing.Provider),
		otelhttp.WithPropagators(telemetry.Propagator()),
		otelhttp.WithFilter(func(r *http.Request) bool { return !probes[r.URL.Path] }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("http: %w", err)
		}
	}()
	s.onStop("http", srv.Shutdown)
}

func (s *Server) startGRPC() {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.auth.UnaryServerInterceptor(), reqlimit.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(s.auth.StreamServerInterceptor(), reqlimit.StreamServerInterceptor()),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(s.tracing.Provider),
			otelgrpc.WithPropagators(telemetry.Propagator()))),
		grpc.MaxRecvMsgSize(4<<20),
	)
	for _, register := range s.grpcServices {
		register(srv)
		// The same services answer Call envelopes on the socket.
		register(s.realtime)
	}
	s.grpcHealth = health.NewServer()
	healthpb.RegisterHealthServer(srv, s.grpcHealth)
	reflection.Register(srv)
	go func() {
		if err := srv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	s.onStop("grpc", func(ctx context.Context) error {
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		// Unary calls finish within the grace; streams (FindOpponent, chat
		// Subscribe, config Watch) never end on their own, so after it they
		// are cut and their clients reconnect elsewhere.
		grace := time.NewTimer(grpcStopGrace)
		defer grace.Stop()
		select {
		case <-done:
			return nil
		case <-grace.C:
			srv.Stop()
			<-done
			return nil
		case <-ctx.Done():
			srv.Stop()
			<-done
			return ctx.Err()
		}
	})
}

// admin guards operator endpoints (/admin/...): with http.admin_token set,
// callers must present it as a bearer token; without one, only loopback
// callers are served, so a default install does not publish them.
func (s *Server) admin(h http.Handler) http.Handler {
	token := s.cfg.HTTP.AdminToken
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" {
			got := auth.BearerFromRequest(r)
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				s.adminRejections.Inc()
				http.Error(w, "admin endpoint: missing or wrong bearer token (http.admin_token)", http.StatusUnauthorized)
				return
			}
		} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
			s.adminRejections.Inc()
			http.Error(w, "admin endpoint: set http.admin_token to reach it from other hosts", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// grpcStopGrace is how long a draining server lets gRPC calls finish before
// it cuts the rest.
const grpcStopGrace = 2 * time.Second

func (s *Server) onStop(name string, fn func(context.Context) error) {
	s.stops = append(s.stops, stop{name, fn})
}

// Addrs returns the bound addresses; valid after Start.
func (s *Server) Addrs() Addrs {
	a := Addrs{HTTP: s.httpLn.Addr().String(), GRPC: s.grpcLn.Addr().String()}
	if s.bus != nil {
		a.NATS = s.bus.ListenAddr()
	}
	return a
}

// Rooms returns the room manager; valid after Start.
func (s *Server) Rooms() *room.Manager { return s.rooms }

// Events returns the room-event stream; valid after Start.
func (s *Server) Events() *roomevents.Publisher { return s.events }

// Bus returns the NATS connection; valid after Start.
func (s *Server) Bus() *bus.Bus { return s.bus }

// Err delivers a fatal error from a serving part; the caller should shut
// down.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown drains: readiness goes false first, then, after the configured
// drain delay, the parts stop in reverse start order. It returns when all
// have stopped or ctx expires.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Drain()
	if s.grpcHealth != nil {
		s.grpcHealth.Shutdown() // every service NOT_SERVING
	}
	s.log.Info("draining", "delay", s.cfg.Shutdown.DrainDelay)
	if d := s.cfg.Shutdown.DrainDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return s.runStops(ctx)
}

func (s *Server) runStops(ctx context.Context) error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		st := s.stops[i]
		if err := st.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", st.name, err))
		}
	}
	s.stops = nil
	return errors.Join(errs...)
}
