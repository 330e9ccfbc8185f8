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

// inputQueue is one player's bounded queue of inputs between two ticks. Its
// slots keep their payload buffers across ticks, so queuing copies into
// memory that is already there.
type inputQueue struct {
	slots []inputSlot
	head  int // index of the oldest queued input
	n     int // queued inputs
	// draining marks slots lent to the tick in progress; new inputs then
	// go to fresh slots so the logic's view stays intact.
	lent int
}

type inputSlot struct {
	op      uint32
	payload []byte
}

func newInputQueue(capacity int) inputQueue {
	return inputQueue{slots: make([]inputSlot, capacity)}
}

// push queues an input; false means it (or an older one) was dropped by
// the policy.
func (q *inputQueue) push(op uint32, payload []byte, policy Overflow) bool {
	size := len(q.slots) - q.lent
	if q.n == size {
		if policy != OverflowDropOldest {
			return false
		}
		q.head = (q.head + 1) % len(q.slots)
		q.n--
		q.set((q.head+q.n)%len(q.slots), op, payload)
		q.n++
		return false
	}
	q.set((q.head+q.n)%len(q.slots), op, payload)
	q.n++
	return true
}

func (q *inputQueue) set(i int, op uint32, payload []byte) {
	s := &q.slots[i]
	s.op = op
	s.payload = append(s.payload[:0], payload...)
}

// drain appends the queued inputs to dst (aliasing the slots' payloads)
// and lends those slots to the tick until release.
func (q *inputQueue) drain(dst []Input, userID string) []Input {
	for i := 0; i < q.n; i++ {
		s := &q.slots[(q.head+i)%len(q.slots)]
		dst = append(dst, Input{UserID: userID, Op: s.op, Payload: s.payload})
	}
	q.lent = q.n
	q.head = (q.head + q.n) % len(q.slots)
	q.n = 0
	return dst
}

// release ends the loan of the slots drained for the last tick.
func (q *inputQueue) release() { q.lent = 0 }
