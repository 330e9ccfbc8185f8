package room

import "fmt"

// Overflow is what happens to an input that arrives when a player's queue
// is full.
type Overflow string

const (
	// OverflowDropOldest discards the oldest queued input: the newest input
	// usually matters most (latest aim, latest direction).
	OverflowDropOldest Overflow = "drop_oldest"
	// OverflowDropNewest discards the arriving input.
	OverflowDropNewest Overflow = "drop_newest"
	// OverflowDisconnect discards it and disconnects the player.
	OverflowDisconnect Overflow = "disconnect"
)

// ParseOverflow validates a configured policy.
func ParseOverflow(s string) (Overflow, error) {
	switch o := Overflow(s); o {
	case OverflowDropOldest, OverflowDropNewest, OverflowDisconnect:
		return o, nil
	}
	return "", fmt.Errorf("room: unknown input overflow policy %q", s)
}

// inputQueue is one player's bounded queue of inputs between two ticks. It
// has two sets of slots: one takes new inputs while the other is lent to
// the tick in progress, so the logic's view stays intact while more inputs
// arrive. Slots keep their payload buffers, so queuing copies into memory
// that is already there.
type inputQueue struct {
	slots [2][]inputSlot
	cur   int // the set taking new inputs
	head  int // oldest queued input in slots[cur]
	n     int // queued inputs in slots[cur]
}

type inputSlot struct {
	op      uint32
	payload []byte
}

func newInputQueue(capacity int) inputQueue {
	return inputQueue{slots: [2][]inputSlot{make([]inputSlot, capacity), make([]inputSlot, capacity)}}
}

// push queues an input; false means it (or an older one) was dropped by
// the policy.
func (q *inputQueue) push(op uint32, payload []byte, policy Overflow) bool {
	ring := q.slots[q.cur]
	if q.n == len(ring) {
		if policy != OverflowDropOldest {
			return false
		}
		q.head = (q.head + 1) % len(ring)
		q.n--
		q.set(ring, (q.head+q.n)%len(ring), op, payload)
		q.n++
		return false
	}
	q.set(ring, (q.head+q.n)%len(ring), op, payload)
	q.n++
	return true
}

func (q *inputQueue) set(ring []inputSlot, i int, op uint32, payload []byte) {
	s := &ring[i]
	s.op = op
	s.payload = append(s.payload[:0], payload...)
}

// drain appends the queued inputs to dst, aliasing their payloads, and
// switches new inputs to the other set of slots. The drained slots stay
// untouched until the next drain, which comes after the tick using them.
func (q *inputQueue) drain(dst []Input, userID string) []Input {
	ring := q.slots[q.cur]
	for i := 0; i < q.n; i++ {
		s := &ring[(q.head+i)%len(ring)]
		dst = append(dst, Input{UserID: userID, Op: s.op, Payload: s.payload})
	}
	q.cur ^= 1
	q.head, q.n = 0, 0
	return dst
}
