package match

import (
	"sync"
)

// Hub delivers ticket updates to the streams watching them on this
// process. With a shared (Redis) pool, another replica may match a ticket
// whose stream is here, so updates travel between replicas over NATS and
// reach the Hub of every replica.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan Update]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[chan Update]struct{}{}} }

// Subscribe returns a channel of a ticket's updates; it is closed after the
// terminal update. cancel stops the subscription early.
func (h *Hub) Subscribe(ticketID string) (<-chan Update, func()) {
	ch := make(chan Update, 4)
	h.mu.Lock()
	set := h.subs[ticketID]
	if set == nil {
		set = map[chan Update]struct{}{}
		h.subs[ticketID] = set
	}
	set[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if set, ok := h.subs[ticketID]; ok {
			if _, ok := set[ch]; ok {
				delete(set, ch)
				close(ch)
				if len(set) == 0 {
					delete(h.subs, ticketID)
				}
			}
		}
	}
}

// Notify delivers u. It never blocks: a subscriber that is 4 updates
// behind misses intermediate ones (widened), never the terminal one, which
// is delivered by replacing what is queued.
func (h *Hub) Notify(u Update) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[u.TicketID]
	for ch := range set {
		select {
		case ch <- u:
		default:
			if u.Kind.Terminal() {
				// Make room for the outcome: drop the oldest update.
				select {
				case <-ch:
				default:
				}
				ch <- u
			}
		}
		if u.Kind.Terminal() {
			close(ch)
		}
	}
	if u.Kind.Terminal() {
		delete(h.subs, u.TicketID)
	}
}
