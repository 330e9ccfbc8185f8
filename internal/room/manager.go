// Package room runs game rooms. Relayed rooms forward each player's
// messages to the others as they arrive; authoritative rooms run a studio's
// game logic (a Logic registered by name) on a fixed tick and synchronise
// entity state to every player as deltas against what that player last
// acknowledged. Seats of dropped players are held for a reconnect.
package room

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/envelope"
	"github.com/rallyhq/rally/internal/roomevents"
	"github.com/rallyhq/rally/internal/statesync"
)

// Config sets room defaults and limits.
type Config struct {
	DefaultTickRate int
	MaxPlayers      int
	EmptyTimeout    time.Duration
	ReconnectHold   time.Duration
	InputQueue      int
	InputOverflow   Overflow
	// PositionQuantum is the default precision of synchronised positions,
	// for logic that asks the Handle for it.
	PositionQuantum float64
	// StateHistory is how many past ticks a room keeps to encode deltas
	// against; a client whose acknowledgement is older gets a full snapshot.
	StateHistory int
}

// EventPublisher takes room events to the durable stream.
type EventPublisher interface {
	Publish(ev roomevents.Event) error
	PublishCustom(roomID, name string, seq uint64, data []byte) error
}

// Error is a failed room operation with the protocol code to report.
type Error struct {
	Code rtv1.Error_Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(code rtv1.Error_Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Manager owns every room of the process.
type Manager struct {
	cfg      Config
	handlers *Registry
	events   EventPublisher
	log      *slog.Logger
	metrics  *metrics
	tracer   trace.Tracer

	mu     sync.RWMutex
	rooms  map[string]*Room
	byUser map[string]map[*Room]struct{} // rooms where a user holds a seat
}

// NewManager returns a manager; events may be nil (no event stream).
func NewManager(cfg Config, handlers *Registry, events EventPublisher, reg prometheus.Registerer, log *slog.Logger) *Manager {
	if cfg.StateHistory == 0 {
		cfg.StateHistory = 64
	}
	if cfg.PositionQuantum <= 0 {
		cfg.PositionQuantum = 0.01
	}
	return &Manager{
		cfg: cfg, handlers: handlers, events: events, log: log,
		metrics: newMetrics(reg),
		tracer:  otel.Tracer("rally/room"),
		rooms:   map[string]*Room{},
		byUser:  map[string]map[*Room]struct{}{},
	}
}

// Get returns a room by id; the []byte key does not allocate.
func (m *Manager) Get(id []byte) *Room {
	m.mu.RLock()
	r := m.rooms[string(id)]
	m.mu.RUnlock()
	return r
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newRoomID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

func (m *Manager) span(ctx context.Context, name string, p Player, roomID string) (context.Context, trace.Span) {
	return m.tracer.Start(ctx, name, trace.WithAttributes(
		attribute.String("player.id", p.UserID),
		attribute.String("session.id", p.SessionID),
		attribute.String("room.id", roomID),
	))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Create makes a room and seats its creator.
func (m *Manager) Create(ctx context.Context, p Player, c Conn, req *rtv1.CreateRoom) (joined *rtv1.RoomJoined, err error) {
	id := newRoomID()
	ctx, span := m.span(ctx, "room.create", p, id)
	defer func() { endSpan(span, err) }()
	return m.create(ctx, id, p, c, req, nil)
}

// create makes a room and seats its creator; a room whose creator cannot
// join is closed again at once.
func (m *Manager) create(ctx context.Context, id string, p Player, c Conn, req *rtv1.CreateRoom, metadata []byte) (*rtv1.RoomJoined, error) {
	r, err := m.newRoom(id, req)
	if err != nil {
		return nil, err
	}
	joined, err := m.join(ctx, r, p, c, metadata, "")
	if err != nil {
		m.closeRoom(r, "creator could not join")
		return nil, err
	}
	return joined, nil
}

func (m *Manager) newRoom(id string, req *rtv1.CreateRoom) (*Room, error) {
	r := &Room{
		id: id, handler: req.GetHandler(), m: m, created: time.Now(),
		labels:     maps.Clone(req.GetLabels()),
		tickRate:   int(req.GetTickRate()),
		maxPlayers: int(req.GetMaxPlayers()),
		seats:      map[string]*seat{},
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if r.labels == nil {
		r.labels = map[string]string{}
	}
	if r.handler != "" {
		factory, ok := m.handlers.lookup(r.handler)
		if !ok {
			return nil, errorf(rtv1.Error_CODE_UNKNOWN_HANDLER, "no room handler %q", r.handler)
		}
		r.logic = factory()
		r.handle = &Handle{r: r}
		settings, err := initLogic(r, req.GetParams())
		if err != nil {
			return nil, errorf(rtv1.Error_CODE_BAD_REQUEST, "room init: %v", err)
		}
		if r.tickRate == 0 {
			r.tickRate = settings.TickRate
		}
		if r.maxPlayers == 0 {
			r.maxPlayers = settings.MaxPlayers
		}
		maps.Copy(r.labels, settings.Labels)
		if len(settings.Schema) > 0 {
			enc, err := statesync.NewEncoder(settings.Schema, m.cfg.StateHistory)
			if err != nil {
				return nil, errorf(rtv1.Error_CODE_INTERNAL, "room state schema: %v", err)
			}
			r.enc, r.schema = enc, settings.Schema
		}
		if r.tickRate == 0 {
			r.tickRate = m.cfg.DefaultTickRate
		}
		if r.tickRate < 1 || r.tickRate > 128 {
			return nil, errorf(rtv1.Error_CODE_BAD_REQUEST, "tick rate %d outside 1-128 Hz", r.tickRate)
		}
		r.ctl = make(chan func())
	} else {
		r.tickRate = 0
	}
	if r.maxPlayers == 0 {
		r.maxPlayers = m.cfg.MaxPlayers
	}
	if r.maxPlayers < 1 || r.maxPlayers > 1024 {
		return nil, errorf(rtv1.Error_CODE_BAD_REQUEST, "max players %d outside 1-1024", r.maxPlayers)
	}

	m.mu.Lock()
	m.rooms[id] = r
	m.mu.Unlock()
	kind := "relayed"
	if r.logic != nil {
		kind = "authoritative"
		go r.run()
	} else {
		close(r.done)
	}
	m.metrics.rooms.WithLabelValues(kind).Inc()
	r.mu.Lock()
	r.eventLocked(roomevents.RoomCreated, nil, "", roomData(r))
	r.mu.Unlock()
	m.log.Debug("room created", "room.id", id, "handler", r.handler, "tick_rate", r.tickRate)
	return r, nil
}

// initLogic runs the logic's Init, turning a panic into an error.
func initLogic(r *Room, params []byte) (settings Settings, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.m.metrics.logicPanics.Inc()
			err = fmt.Errorf("panic in Init: %v", v)
		}
	}()
	return r.logic.Init(r.handle, params)
}

func roomData(r *Room) []byte {
	b, _ := jsonMarshal(map[string]any{"handler": r.handler, "labels": r.labels, "max_players": r.maxPlayers, "tick_rate": r.tickRate})
	return b
}

// Join seats a player in a room by id, or by labels with join-or-create.
func (m *Manager) Join(ctx context.Context, p Player, c Conn, req *rtv1.JoinRoom) (joined *rtv1.RoomJoined, err error) {
	if id := req.GetRoomId(); id != "" {
		ctx, span := m.span(ctx, "room.join", p, id)
		defer func() { endSpan(span, err) }()
		r := m.Get([]byte(id))
		if r == nil {
			return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "no room %q", id)
		}
		return m.join(ctx, r, p, c, req.GetMetadata(), req.GetReservation())
	}
	for _, r := range m.match(req.GetLabels(), req.GetHandler(), true) {
		joined, err := m.join(ctx, r, p, c, req.GetMetadata(), "")
		var re *Error
		if err == nil || !errors.As(err, &re) || (re.Code != rtv1.Error_CODE_ROOM_FULL && re.Code != rtv1.Error_CODE_REJECTED) {
			return joined, err
		}
	}
	if req.GetCreate() == nil {
		return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "no open room matches")
	}
	create := req.GetCreate()
	labels := maps.Clone(create.GetLabels())
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, req.GetLabels())
	cr := &rtv1.CreateRoom{Handler: create.GetHandler(), Labels: labels, MaxPlayers: create.GetMaxPlayers(),
		TickRate: create.GetTickRate(), Params: create.GetParams()}
	if cr.Handler == "" {
		cr.Handler = req.GetHandler()
	}
	id := newRoomID()
	ctx, span := m.span(ctx, "room.create", p, id)
	defer func() { endSpan(span, err) }()
	return m.create(ctx, id, p, c, cr, req.GetMetadata())
}

// match returns open rooms whose labels include labels, fullest first.
func (m *Manager) match(labels map[string]string, handler string, openOnly bool) []*Room {
	m.mu.RLock()
	var out []*Room
	for _, r := range m.rooms {
		r.mu.RLock()
		ok := !r.closed && (handler == "" || r.handler == handler) && (!openOnly || len(r.seats) < r.maxPlayers && r.reserved == nil)
		for k, v := range labels {
			if r.labels[k] != v {
				ok = false
				break
			}
		}
		r.mu.RUnlock()
		if ok {
			out = append(out, r)
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		ni, nj := out[i].players(), out[j].players()
		if ni != nj {
			return ni > nj
		}
		return out[i].created.Before(out[j].created)
	})
	return out
}

func (r *Room) players() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.seats)
}

// List describes rooms whose labels include every given label.
func (m *Manager) List(req *rtv1.ListRooms) []*rtv1.Room {
	rooms := m.match(req.GetLabels(), req.GetHandler(), false)
	limit := int(req.GetLimit())
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	out := make([]*rtv1.Room, 0, min(limit, len(rooms)))
	for _, r := range rooms[:min(limit, len(rooms))] {
		r.mu.RLock()
		out = append(out, r.describe())
		r.mu.RUnlock()
	}
	return out
}

// join seats p in r, asking the logic first in authoritative rooms.
func (m *Manager) join(ctx context.Context, r *Room, p Player, c Conn, metadata []byte, reservation string) (*rtv1.RoomJoined, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "room %s is closed", r.id)
	}
	if r.reserved != nil {
		if tok, ok := r.reserved[p.UserID]; !ok || tok != reservation {
			r.mu.Unlock()
			m.metrics.joins.WithLabelValues("not_reserved").Inc()
			return nil, errorf(rtv1.Error_CODE_REJECTED, "room %s admits only its reserved players", r.id)
		}
	}
	if s, ok := r.seats[p.UserID]; ok {
		if s.conn == c {
			r.mu.Unlock()
			return nil, errorf(rtv1.Error_CODE_ALREADY_IN_ROOM, "already in room %s", r.id)
		}
		r.mu.Unlock()
		if j := m.rebind(r, p, c); j != nil {
			return j, nil
		}
		return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "room %s is closed", r.id)
	}
	if len(r.seats) >= r.maxPlayers {
		r.mu.Unlock()
		m.metrics.joins.WithLabelValues("full").Inc()
		return nil, errorf(rtv1.Error_CODE_ROOM_FULL, "room %s is full", r.id)
	}
	r.mu.Unlock()

	var joined *rtv1.RoomJoined
	var joinErr error
	seatFn := func() {
		if r.logic != nil {
			if ok, reason := r.logic.JoinAttempt(r.handle, p, metadata); !ok {
				joinErr = errorf(rtv1.Error_CODE_REJECTED, "rejected: %s", reason)
				return
			}
		}
		r.mu.Lock()
		if r.closed || len(r.seats) >= r.maxPlayers {
			r.mu.Unlock()
			joinErr = errorf(rtv1.Error_CODE_ROOM_FULL, "room %s is full", r.id)
			return
		}
		r.nextID++
		s := &seat{player: p, entityID: r.nextID, conn: c, inputs: newInputQueue(m.cfg.InputQueue)}
		r.seats[p.UserID] = s
		if r.emptyAt != nil {
			r.emptyAt.Stop()
			r.emptyAt = nil
		}
		self := &rtv1.Player{UserId: p.UserID, Username: p.Username}
		r.presenceLocked(s, func(pr *rtv1.Presence) { pr.Joins = []*rtv1.Player{self} })
		r.eventLocked(roomevents.PlayerJoined, &p, "", nil)
		joined = &rtv1.RoomJoined{Room: r.describe(), Players: r.playersLocked(), Self: self}
		r.mu.Unlock()
		m.track(p.UserID, r, true)
		m.metrics.players.Inc()
		if r.logic != nil {
			r.logic.Join(r.handle, p)
		}
	}
	if r.logic != nil {
		if err := r.do(ctx, seatFn); err != nil {
			return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "room %s: %v", r.id, err)
		}
	} else {
		seatFn()
	}
	if joinErr != nil {
		m.metrics.joins.WithLabelValues("rejected").Inc()
		return nil, joinErr
	}
	m.metrics.joins.WithLabelValues("ok").Inc()
	return joined, nil
}

// rebind points a held (or otherwise connected) seat at a new connection:
// the player is back, with a fresh snapshot on the next tick.
func (m *Manager) rebind(r *Room, p Player, c Conn) *rtv1.RoomJoined {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.seats[p.UserID]
	if !ok || r.closed {
		return nil
	}
	if s.hold != nil {
		s.hold.Stop()
		s.hold = nil
	}
	s.conn, s.acked, s.player.SessionID = c, 0, p.SessionID
	self := &rtv1.Player{UserId: p.UserID, Username: p.Username}
	r.presenceLocked(s, func(pr *rtv1.Presence) { pr.Rejoined = []*rtv1.Player{self} })
	r.eventLocked(roomevents.PlayerRejoined, &p, "", nil)
	return &rtv1.RoomJoined{Room: r.describe(), Players: r.playersLocked(), Self: self}
}

// Leave removes a player from a room at their request.
func (m *Manager) Leave(ctx context.Context, p Player, roomID string) (err error) {
	ctx, span := m.span(ctx, "room.leave", p, roomID)
	defer func() { endSpan(span, err) }()
	r := m.Get([]byte(roomID))
	if r == nil {
		return errorf(rtv1.Error_CODE_NOT_FOUND, "no room %q", roomID)
	}
	if !m.removeSeat(ctx, r, p.UserID, "left", false) {
		return errorf(rtv1.Error_CODE_NOT_IN_ROOM, "not in room %s", roomID)
	}
	return nil
}

// removeSeat takes a player's seat away and tells the room. onRoomGoroutine
// is true when called from inside a Logic method.
func (m *Manager) removeSeat(ctx context.Context, r *Room, uid, reason string, onRoomGoroutine bool) bool {
	r.mu.Lock()
	s, ok := r.seats[uid]
	if !ok {
		r.mu.Unlock()
		return false
	}
	delete(r.seats, uid)
	if s.hold != nil {
		s.hold.Stop()
	}
	left := &rtv1.Player{UserId: uid, Username: s.player.Username}
	r.presenceLocked(nil, func(pr *rtv1.Presence) { pr.Leaves = []*rtv1.Player{left} })
	r.eventLocked(roomevents.PlayerLeft, &s.player, reason, nil)
	if len(r.seats) == 0 && !r.closed {
		r.emptyAt = time.AfterFunc(m.cfg.EmptyTimeout, func() { m.closeIfEmpty(r) })
	}
	r.mu.Unlock()
	m.track(uid, r, false)
	m.metrics.players.Dec()
	if r.logic != nil {
		leave := func() { r.logic.Leave(r.handle, s.player, reason) }
		if onRoomGoroutine {
			leave()
		} else {
			_ = r.do(ctx, leave)
		}
	}
	return true
}

func (m *Manager) track(uid string, r *Room, seated bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rooms := m.byUser[uid]
	if seated {
		if rooms == nil {
			rooms = map[*Room]struct{}{}
			m.byUser[uid] = rooms
		}
		rooms[r] = struct{}{}
		return
	}
	delete(rooms, r)
	if len(rooms) == 0 {
		delete(m.byUser, uid)
	}
}

func (m *Manager) roomsOf(uid string) []*Room {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Room, 0, len(m.byUser[uid]))
	for r := range m.byUser[uid] {
		out = append(out, r)
	}
	return out
}

// Disconnected is called when a connection is gone: the player's seats
// bound to it are held for the reconnect hold, then given up.
func (m *Manager) Disconnected(p Player, c Conn) {
	for _, r := range m.roomsOf(p.UserID) {
		r.mu.Lock()
		s, ok := r.seats[p.UserID]
		if !ok || s.conn != c || r.closed {
			r.mu.Unlock()
			continue
		}
		s.conn = nil
		if m.cfg.ReconnectHold <= 0 {
			r.mu.Unlock()
			m.removeSeat(context.Background(), r, p.UserID, "disconnected", false)
			continue
		}
		s.hold = time.AfterFunc(m.cfg.ReconnectHold, func() { m.expireHold(r, p.UserID, s) })
		dropped := &rtv1.Player{UserId: p.UserID, Username: p.Username}
		r.presenceLocked(s, func(pr *rtv1.Presence) { pr.Dropped = []*rtv1.Player{dropped} })
		r.eventLocked(roomevents.PlayerDropped, &p, "connection lost", nil)
		r.mu.Unlock()
		m.metrics.held.Inc()
	}
}

func (m *Manager) expireHold(r *Room, uid string, s *seat) {
	r.mu.RLock()
	still := r.seats[uid] == s && s.conn == nil
	r.mu.RUnlock()
	if still {
		m.removeSeat(context.Background(), r, uid, "reconnect hold expired", false)
	}
}

// Resume rebinds every seat the player holds to a new connection and
// returns a RoomJoined for each, so the client can restore its rooms.
func (m *Manager) Resume(p Player, c Conn) []*rtv1.RoomJoined {
	var out []*rtv1.RoomJoined
	for _, r := range m.roomsOf(p.UserID) {
		if j := m.rebind(r, p, c); j != nil {
			out = append(out, j)
		}
	}
	return out
}

// CreateReserved makes a room for a match: only the listed users may join,
// each presenting the reservation token returned for them. A room nobody
// joins closes after the empty timeout.
func (m *Manager) CreateReserved(_ context.Context, handler string, labels map[string]string, users []string) (string, map[string]string, error) {
	r, err := m.newRoom(newRoomID(), &rtv1.CreateRoom{Handler: handler, Labels: labels, MaxPlayers: uint32(len(users))})
	if err != nil {
		return "", nil, err
	}
	tokens := make(map[string]string, len(users))
	for _, u := range users {
		var b [12]byte
		_, _ = rand.Read(b[:])
		tokens[u] = idEncoding.EncodeToString(b[:])
	}
	r.mu.Lock()
	r.reserved = tokens
	r.emptyAt = time.AfterFunc(m.cfg.EmptyTimeout, func() { m.closeIfEmpty(r) })
	r.mu.Unlock()
	return r.id, maps.Clone(tokens), nil
}

// Signal delivers data to an authoritative room's logic and returns its
// reply.
func (m *Manager) Signal(ctx context.Context, roomID string, data []byte) ([]byte, error) {
	r := m.Get([]byte(roomID))
	if r == nil || r.logic == nil {
		return nil, errorf(rtv1.Error_CODE_NOT_FOUND, "no authoritative room %q", roomID)
	}
	var reply []byte
	var err error
	if doErr := r.do(ctx, func() { reply, err = r.logic.Signal(r.handle, data) }); doErr != nil {
		return nil, doErr
	}
	return reply, err
}

func (m *Manager) closeIfEmpty(r *Room) {
	r.mu.RLock()
	empty := len(r.seats) == 0
	r.mu.RUnlock()
	if empty {
		m.closeRoom(r, "empty")
	}
}

// closeRoom ends a room: players are told, the logic terminates, the event
// stream records it.
func (m *Manager) closeRoom(r *Room, reason string) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	if r.emptyAt != nil {
		r.emptyAt.Stop()
	}
	b, _ := envelope.Marshal(nil, &rtv1.Envelope{Message: &rtv1.Envelope_RoomClosed{RoomClosed: &rtv1.RoomClosed{RoomId: r.id, Reason: reason}}}, false)
	r.pushLocked(b, nil, "room_closed")
	seated := make([]string, 0, len(r.seats))
	for uid, s := range r.seats {
		seated = append(seated, uid)
		if s.hold != nil {
			s.hold.Stop()
		}
	}
	r.mu.Unlock()

	if r.logic != nil {
		_ = r.do(context.Background(), func() { r.logic.Terminate(r.handle, reason) })
		close(r.quit)
		<-r.done
	}
	r.mu.Lock()
	r.eventLocked(roomevents.RoomClosed, nil, reason, nil)
	m.metrics.players.Sub(float64(len(r.seats)))
	r.seats = map[string]*seat{}
	r.mu.Unlock()

	m.mu.Lock()
	delete(m.rooms, r.id)
	for _, uid := range seated {
		if rooms := m.byUser[uid]; rooms != nil {
			delete(rooms, r)
			if len(rooms) == 0 {
				delete(m.byUser, uid)
			}
		}
	}
	m.mu.Unlock()
	kind := "relayed"
	if r.logic != nil {
		kind = "authoritative"
	}
	m.metrics.rooms.WithLabelValues(kind).Dec()
	m.log.Debug("room closed", "room.id", r.id, "reason", reason)
}

// Close closes every room (server shutdown).
func (m *Manager) Close(ctx context.Context) error {
	m.mu.RLock()
	rooms := make([]*Room, 0, len(m.rooms))
	for _, r := range m.rooms {
		rooms = append(rooms, r)
	}
	m.mu.RUnlock()
	for _, r := range rooms {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.closeRoom(r, "server shutting down")
	}
	return nil
}

// slowConsumer disconnects a player whose send queue could not take what
// must not be lost (kind names it); the player is told why. Room code calls
// it under the room's lock: Conn.Kick never blocks.
func (m *Manager) slowConsumer(c Conn, kind string) {
	m.metrics.slowConsumers.WithLabelValues(kind).Inc()
	c.Kick(rtv1.Error_CODE_RATE_LIMITED, "too slow: send queue full ("+kind+" undelivered)")
}
