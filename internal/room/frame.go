package room

import (
	"sync"
	"sync/atomic"
)

// Frame is one encoded binary Envelope on its way to one or more players.
// A broadcast is encoded once and shared: each recipient's connection holds
// a reference and releases it after writing, and the last release returns
// the frame to a pool, so steady-state traffic allocates nothing.
type Frame struct {
	B    []byte
	refs atomic.Int32
}

// maxPooledFrame keeps rare huge frames from pinning memory in the pool.
const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any { return &Frame{B: make([]byte, 0, 512)} }}

// NewFrame returns an empty frame holding one reference.
func NewFrame() *Frame {
	f := framePool.Get().(*Frame)
	f.B = f.B[:0]
	f.refs.Store(1)
	return f
}

// Retain adds a reference, for one more recipient.
func (f *Frame) Retain() { f.refs.Add(1) }

// Release drops a reference; the last one recycles the frame.
func (f *Frame) Release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		if cap(f.B) <= maxPooledFrame {
			framePool.Put(f)
		}
	case n < 0:
		panic("room: frame released more often than retained")
	}
}
