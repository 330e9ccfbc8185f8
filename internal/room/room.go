package room

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"sync"
	"time"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/envelope"
	"github.com/rallyhq/rally/internal/roomevents"
	"github.com/rallyhq/rally/internal/statesync"
)

// Conn is a player's connection as a room sees it. Realtime connections
// implement it.
type Conn interface {
	// Send queues a frame for writing and takes over the caller's reference.
	// It never blocks; false means the connection's queue is full (or it is
	// closed) and the frame was not taken.
	Send(f *Frame) bool
	// Kick sends an error and closes the connection. It never blocks and
	// takes no lock a room holds, so rooms call it under their own lock.
	Kick(code rtv1.Error_Code, msg string)
}

// seat is one player's place in a room. conn is nil while the player is
// dropped and their seat held.
type seat struct {
	player   Player
	entityID uint32
	conn     Conn
	hold     *time.Timer
	// acked is the newest state tick the client confirmed; 0 forces a full
	// snapshot (on join and reconnect).
	acked uint32
	// pending holds the logic's messages for this player until the next
	// state frame (AppendFrameMessage entries).
	pending []byte
	// inputs received since the last tick (authoritative rooms).
	inputs inputQueue
}

// Room is one game room: relayed (players' messages are forwarded) or
// authoritative (a Logic runs on a fixed tick).
type Room struct {
	id         string
	handler    string
	tickRate   int
	maxPlayers int
	created    time.Time
	m          *Manager
	logic      Logic
	handle     *Handle
	enc        *statesync.Encoder
	schema     statesync.Schema

	mu     sync.RWMutex
	labels map[string]string
	seats  map[string]*seat // by user id
	// reserved, when set, admits only these users, each with its token
	// (rooms the matchmaker creates).
	reserved  map[string]string
	nextID    uint32
	closed    bool
	emptyAt   *time.Timer
	eventSeq  uint64
	scratch   []byte // state encoding, tick goroutine only
	tickInput []Input

	ctl  chan func()   // work for the room goroutine (authoritative)
	quit chan struct{} // closed to stop the room goroutine
	done chan struct{} // closed when it has stopped
}

// ID returns the room id.
func (r *Room) ID() string { return r.id }

// Authoritative reports whether game logic runs the room.
func (r *Room) Authoritative() bool { return r.logic != nil }

// describe returns the room as the protocol lists it. Callers hold r.mu.
func (r *Room) describe() *rtv1.Room {
	d := &rtv1.Room{
		Id: r.id, Handler: r.handler, Labels: maps.Clone(r.labels),
		Players: uint32(len(r.seats)), MaxPlayers: uint32(r.maxPlayers), TickRate: uint32(r.tickRate),
	}
	for _, f := range r.schema {
		d.Schema = append(d.Schema, &rtv1.StateField{Name: f.Name, Quantum: f.Quantum})
	}
	return d
}

func (r *Room) playersLocked() []*rtv1.Player {
	out := make([]*rtv1.Player, 0, len(r.seats))
	for _, s := range r.seats {
		out = append(out, &rtv1.Player{UserId: s.player.UserID, Username: s.player.Username})
	}
	return out
}

// Relay forwards a relayed room's message from one player to the others (or
// only to the listed users). It runs on the sender's connection goroutine
// and encodes the message once for everyone.
func (r *Room) Relay(from string, op uint32, payload []byte, to [][]byte) error {
	r.mu.RLock()
	sender, ok := r.seats[from]
	if !ok || r.closed {
		r.mu.RUnlock()
		return errNotInRoom
	}
	f := NewFrame()
	f.B = envelope.AppendData(f.B, r.id, sender.player.UserID, op, payload)
	for uid, s := range r.seats {
		if s == sender || s.conn == nil || (len(to) > 0 && !listed(to, uid)) {
			continue
		}
		f.Retain()
		if !s.conn.Send(f) {
			f.Release()
			r.m.slowConsumer(s.conn, "data")
		}
	}
	r.mu.RUnlock()
	f.Release()
	r.m.metrics.relayed.Inc()
	return nil
}

func listed(to [][]byte, uid string) bool {
	for _, t := range to {
		if string(t) == uid {
			return true
		}
	}
	return false
}

// Input queues a player's input for the next tick of an authoritative room,
// applying the configured overflow policy when the player's queue is full.
func (r *Room) Input(from string, op uint32, payload []byte) error {
	r.mu.Lock()
	s, ok := r.seats[from]
	if !ok || r.closed {
		r.mu.Unlock()
		return errNotInRoom
	}
	accepted := s.inputs.push(op, payload, r.m.cfg.InputOverflow)
	conn := s.conn
	r.mu.Unlock()
	if !accepted {
		r.m.metrics.inputsDropped.WithLabelValues(string(r.m.cfg.InputOverflow)).Inc()
		if r.m.cfg.InputOverflow == OverflowDisconnect && conn != nil {
			conn.Kick(rtv1.Error_CODE_RATE_LIMITED, "input queue full")
		}
	}
	return nil
}

// Ack records the newest state tick a player applied.
func (r *Room) Ack(from string, tick uint32) {
	r.mu.Lock()
	if s, ok := r.seats[from]; ok && tick > s.acked {
		s.acked = tick
	}
	r.mu.Unlock()
}

var (
	errNotInRoom = errors.New("not in this room")
	errClosed    = errors.New("room closed")
)

// run is an authoritative room's goroutine: it ticks at the room's rate and
// runs control work (joins, leaves, signals) between ticks, so Logic is
// only ever called from here.
func (r *Room) run() {
	defer close(r.done)
	period := time.Second / time.Duration(r.tickRate)
	// An empty room does not tick: rooms made for a match wait for their
	// players at no cost, and a room everyone left idles until it closes.
	var t *time.Ticker
	var ticks <-chan time.Time
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	var tick uint32
	for {
		select {
		case <-r.quit:
			return
		case fn := <-r.ctl:
			r.safely(fn)
		case <-ticks:
			tick++
			start := time.Now()
			r.safely(func() { r.tick(tick) })
			d := time.Since(start)
			r.m.metrics.tickSeconds.Observe(d.Seconds())
			if d > period {
				r.m.metrics.tickOverruns.Inc()
			}
		}
		switch seated := r.players() > 0; {
		case seated && t == nil:
			t = time.NewTicker(period)
			ticks = t.C
		case !seated && t != nil:
			t.Stop()
			t, ticks = nil, nil
		}
	}
}

// safely runs game code so that a panic in it closes this room instead of
// the whole server.
func (r *Room) safely(fn func()) {
	defer func() {
		if v := recover(); v != nil {
			r.m.metrics.logicPanics.Inc()
			r.m.log.Error("room logic panicked; closing the room", "room.id", r.id, "handler", r.handler,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			go r.m.closeRoom(r, "internal error")
		}
	}()
	fn()
}

// do runs fn on the room goroutine and waits for it.
func (r *Room) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case r.ctl <- func() { defer close(done); fn() }:
	case <-r.done:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-r.done:
		return errClosed
	}
}

// tick gathers inputs, runs the logic, and sends each connected player one
// frame: the state since what they acknowledged plus the logic's messages.
func (r *Room) tick(tick uint32) {
	r.mu.Lock()
	r.tickInput = r.tickInput[:0]
	for _, s := range r.seats {
		r.tickInput = s.inputs.drain(r.tickInput, s.player.UserID)
	}
	r.mu.Unlock()

	r.logic.Tick(r.handle, tick, r.tickInput)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.enc == nil {
		r.flushMessagesLocked()
		return
	}
	if err := r.enc.Commit(tick); err != nil {
		r.m.log.Error("state commit", "room.id", r.id, "err", err)
		return
	}
	// A state frame that a full queue refuses is dropped: the next one is
	// built from the player's last acknowledged tick, so it carries these
	// changes too (a snapshot if that tick is too old). The logic's
	// messages in it are kept for the next frame, up to maxPendingBytes.
	sent := 0
	for _, s := range r.seats {
		if s.conn == nil {
			continue
		}
		var used uint32
		r.scratch, used = r.enc.AppendFrame(r.scratch[:0], s.acked)
		f := NewFrame()
		f.B = envelope.StateFrameHeader(f.B, r.id, tick, used, len(r.scratch), len(s.pending))
		f.B = append(f.B, r.scratch...)
		f.B = append(f.B, s.pending...)
		if !s.conn.Send(f) {
			f.Release()
			r.m.metrics.stateDropped.Inc()
			if len(s.pending) > maxPendingBytes {
				r.m.slowConsumer(s.conn, "state_backlog")
			}
			continue
		}
		s.pending = s.pending[:0]
		sent++
	}
	r.m.metrics.frames.Add(float64(sent))
}

// maxPendingBytes bounds the logic messages kept for a player whose state
// frames are being dropped; past it the player is disconnected.
const maxPendingBytes = 64 << 10

// flushMessagesLocked sends pending logic messages of a room without state
// as a frame with no data.
func (r *Room) flushMessagesLocked() {
	for _, s := range r.seats {
		if s.conn == nil || len(s.pending) == 0 {
			continue
		}
		f := NewFrame()
		f.B = envelope.StateFrameHeader(f.B, r.id, 0, 0, 0, len(s.pending))
		f.B = append(f.B, s.pending...)
		s.pending = s.pending[:0]
		if !s.conn.Send(f) {
			f.Release()
			r.m.slowConsumer(s.conn, "message")
		}
	}
}

// pushLocked sends an encoded envelope to every connected seat but skip; a
// player whose queue cannot take it is disconnected (kind says what was
// lost), never left out silently.
func (r *Room) pushLocked(b []byte, skip *seat, kind string) {
	for _, s := range r.seats {
		if s == skip || s.conn == nil {
			continue
		}
		f := NewFrame()
		f.B = append(f.B, b...)
		if !s.conn.Send(f) {
			f.Release()
			r.m.slowConsumer(s.conn, kind)
		}
	}
}

// presenceLocked announces seat changes to the room.
func (r *Room) presenceLocked(skip *seat, build func(*rtv1.Presence)) {
	p := &rtv1.Presence{RoomId: r.id}
	build(p)
	b, err := envelope.Marshal(nil, &rtv1.Envelope{Message: &rtv1.Envelope_Presence{Presence: p}}, false)
	if err != nil {
		return
	}
	r.pushLocked(b, skip, "presence")
}

// event publishes a room event; the stream is best effort from the room's
// point of view (the publisher retries and dead-letters on its own).
func (r *Room) eventLocked(typ roomevents.Type, p *Player, reason string, data []byte) {
	if r.m.events == nil {
		return
	}
	r.eventSeq++
	ev := roomevents.Event{Type: typ, RoomID: r.id, Reason: reason, At: time.Now().UTC(), Seq: r.eventSeq}
	if p != nil {
		ev.UserID, ev.Username = p.UserID, p.Username
	}
	if len(data) > 0 {
		ev.Data = data
	}
	// One non-blocking hand-over: encoding and NATS happen on the
	// publisher's workers, and a full queue dead-letters the event (counted
	// there) instead of waiting.
	if err := r.m.events.Publish(ev); err != nil && !errors.Is(err, roomevents.ErrQueueFull) {
		r.m.log.Warn("room event not queued", "room.id", r.id, "type", typ, "err", err)
	}
}

func (r *Room) String() string { return fmt.Sprintf("room %s (%s)", r.id, r.handler) }
