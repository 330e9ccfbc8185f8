// Package realtime serves the WebSocket endpoint players connect to: it
// authenticates the socket, enforces per-connection limits on frame size
// and message rate, decodes envelopes and hands them to rooms, and writes
// each player's outgoing frames from one writer goroutine per connection.
package realtime

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/room"
)

// Verifier checks a session token and returns the player it belongs to.
type Verifier func(token string) (room.Player, error)

// TokenFromRequest extracts the session token of an upgrade request.
type TokenFromRequest func(r *http.Request) string

// Matchmaker queues tickets for players on sockets (the match package's
// Service); nil leaves matchmaking off the socket.
type Matchmaker interface {
	Find(ctx context.Context, userID string, req *matchv1.TicketRequest, send func(*matchv1.TicketUpdate)) (ticketID string, stop func(), err error)
	CancelFor(ctx context.Context, userID, ticketID string) error
}

// Limits bound each connection.
type Limits struct {
	MaxFrameBytes int
	MsgsPerSec    int
	Burst         int
	SendQueue     int
	PingInterval  time.Duration
	// PongTimeout bounds the wait for a pong (PingInterval when zero).
	PongTimeout  time.Duration
	WriteTimeout time.Duration
}

// Server accepts WebSocket connections and owns them until they close.
type Server struct {
	rooms   *room.Manager
	match   Matchmaker
	verify  Verifier
	token   TokenFromRequest
	limits  Limits
	log     *slog.Logger
	metrics *metrics
	tracer  trace.Tracer
	calls   callRegistry

	mu      sync.Mutex
	conns   map[string]*conn // by user id: one socket per player
	closing bool
	wg      sync.WaitGroup
}

// New returns a realtime server dispatching to rooms.
func New(rooms *room.Manager, verify Verifier, token TokenFromRequest, limits Limits, reg prometheus.Registerer, log *slog.Logger) *Server {
	return &Server{
		rooms: rooms, verify: verify, token: token, limits: limits, log: log,
		metrics: newMetrics(reg),
		tracer:  otel.Tracer("rally/realtime"),
		conns:   map[string]*conn{},
	}
}

// SetMatchmaker enables FindMatch and CancelMatch on sockets; call it
// before serving.
func (s *Server) SetMatchmaker(m Matchmaker) { s.match = m }

// ServeHTTP upgrades /ws?token=...&format=protobuf|json.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "protobuf"
	}
	if format != "protobuf" && format != "json" {
		http.Error(w, `format must be "protobuf" or "json"`, http.StatusBadRequest)
		return
	}
	player, err := s.verify(s.token(r))
	if err != nil {
		s.metrics.rejections.WithLabelValues("unauthenticated").Inc()
		http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
		return
	}
	// Clients may continue their own trace (W3C traceparent or B3 headers).
	parent := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(parent, "realtime.connect", trace.WithAttributes(
		attribute.String("player.id", player.UserID), attribute.String("session.id", player.SessionID),
		attribute.String("realtime.format", format)))
	hr := &hijackResponse{ResponseWriter: w}
	ws, err := websocket.Accept(hr, r, &websocket.AcceptOptions{
		// Sessions are bearer tokens, never cookies, so a page from another
		// origin gains nothing by opening a socket: origins are not checked.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		span.End()
		return // Accept has answered the request
	}
	// Frames are read into our own bounded buffer; the library's limit only
	// has to let one byte more than ours through so we can report it.
	ws.SetReadLimit(int64(s.limits.MaxFrameBytes) + 1)

	c := newConn(s, ws, hr.batch, player, format == "json", trace.ContextWithSpanContext(context.Background(), span.SpanContext()))
	span.End()
	if !s.register(c) {
		// The writer says why and closes the socket; without it the client
		// would hold a socket to a server that is gone.
		c.Kick(rtv1.Error_CODE_SHUTTING_DOWN, "server shutting down")
		go c.writeLoop()
		c.wait()
		return
	}
	s.wg.Add(1)
	defer s.wg.Done()
	for _, joined := range s.rooms.Resume(player, c) {
		c.push(&rtv1.Envelope{Message: &rtv1.Envelope_RoomJoined{RoomJoined: joined}})
	}
	c.serve(ctx)
	s.unregister(c)
	s.rooms.Disconnected(player, c)
}

// End closes a player's socket because a session ended (logout, a reused
// refresh token, a ban): the socket of that session, or with sessionID
// empty whichever the player has. The player is told why.
func (s *Server) End(userID, sessionID, reason string) {
	s.mu.Lock()
	c := s.conns[userID]
	s.mu.Unlock()
	if c == nil || (sessionID != "" && c.player.SessionID != sessionID) {
		return
	}
	s.metrics.rejections.WithLabelValues("session_ended").Inc()
	c.Kick(rtv1.Error_CODE_UNAUTHENTICATED, reason)
}

// register makes c the player's one connection; an older one is replaced.
func (s *Server) register(c *conn) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	old := s.conns[c.player.UserID]
	s.conns[c.player.UserID] = c
	s.mu.Unlock()
	s.metrics.connections.Inc()
	if old != nil {
		s.metrics.rejections.WithLabelValues("replaced").Inc()
		old.Kick(rtv1.Error_CODE_BAD_REQUEST, "replaced by a newer connection of the same player")
	}
	return true
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	if s.conns[c.player.UserID] == c {
		delete(s.conns, c.player.UserID)
	}
	s.mu.Unlock()
	s.metrics.connections.Dec()
}

// Close disconnects every player with a shutting-down error and waits for
// their goroutines, bounded by ctx.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Kick(rtv1.Error_CODE_SHUTTING_DOWN, "server shutting down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("realtime: connections still open at shutdown deadline")
	}
}
