package room

import (
	"context"
	"maps"

	"github.com/rallyhq/rally/internal/envelope"
)

// Handle is what a room's Logic uses to act on its room. Its methods may be
// called only from the Logic's own methods (the room goroutine).
type Handle struct {
	r *Room
}

// ID returns the room id.
func (h *Handle) ID() string { return h.r.id }

// TickRate returns the room's ticks per second.
func (h *Handle) TickRate() int { return h.r.tickRate }

// PositionQuantum is the server's configured precision for synchronised
// positions (rooms.position_quantum).
func (h *Handle) PositionQuantum() float64 { return h.r.m.cfg.PositionQuantum }

// EntityID returns the state-sync entity id reserved for a seated player,
// stable for as long as they hold the seat (also across reconnects).
func (h *Handle) EntityID(userID string) (uint32, bool) {
	h.r.mu.RLock()
	defer h.r.mu.RUnlock()
	s, ok := h.r.seats[userID]
	if !ok {
		return 0, false
	}
	return s.entityID, true
}

// Players returns the seated players, connected or held.
func (h *Handle) Players() []Player {
	h.r.mu.RLock()
	defer h.r.mu.RUnlock()
	out := make([]Player, 0, len(h.r.seats))
	for _, s := range h.r.seats {
		out = append(out, s.player)
	}
	return out
}

// SetEntity sets a synchronised entity's field values, in schema order.
func (h *Handle) SetEntity(id uint32, values ...float64) {
	if h.r.enc != nil {
		h.r.enc.Set(id, values...)
	}
}

// RemoveEntity removes a synchronised entity.
func (h *Handle) RemoveEntity(id uint32) {
	if h.r.enc != nil {
		h.r.enc.Remove(id)
	}
}

// Send queues a message for the listed players, or for every player when
// none is listed; it goes out with their next state frame.
func (h *Handle) Send(op uint32, payload []byte, to ...string) {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	for uid, s := range h.r.seats {
		if len(to) > 0 && !contains(to, uid) {
			continue
		}
		s.pending = envelope.AppendFrameMessage(s.pending, op, payload)
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// SetLabels replaces the room's labels (for listing and join-by-label).
func (h *Handle) SetLabels(labels map[string]string) {
	h.r.mu.Lock()
	h.r.labels = maps.Clone(labels)
	h.r.mu.Unlock()
}

// Kick removes a player from the room with a reason.
func (h *Handle) Kick(userID, reason string) {
	h.r.m.removeSeat(context.Background(), h.r, userID, "kicked: "+reason, true)
}

// Close closes the room after the current call returns.
func (h *Handle) Close(reason string) {
	go h.r.m.closeRoom(h.r, reason)
}

// PublishEvent publishes a custom event of this room on the event stream
// (rally.room.<id>.custom.<name>); data must be JSON.
func (h *Handle) PublishEvent(name string, data []byte) error {
	if h.r.m.events == nil {
		return nil
	}
	h.r.mu.Lock()
	h.r.eventSeq++
	seq := h.r.eventSeq
	h.r.mu.Unlock()
	return h.r.m.events.PublishCustom(h.r.id, name, seq, data)
}
