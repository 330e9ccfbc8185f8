package statesync

import (
	"fmt"
	"slices"
)

// Encoder holds a room's authoritative world and its recent snapshots, and
// encodes the latest snapshot for clients against whatever tick each one
// acknowledged.
//
// An Encoder is not safe for concurrent use: it belongs to the room's tick
// loop, which calls Set and Remove, then Commit, then AppendFrame for each
// client. Copy the frames out (AppendFrame does) before handing them to
// other goroutines.
type Encoder struct {
	schema Schema
	nf     int

	// The world being built for the next Commit, ids ascending so Commit
	// is a plain copy.
	ids  []uint32
	vals []int64

	history ring

	// Frames encoded for the latest tick, keyed by base, so clients that
	// acknowledged the same tick share one encoding.
	cache   []byte
	entries []cacheEntry
	encodes int // frames encoded so far; lets tests check the cache
}

type cacheEntry struct {
	base       uint32
	start, end int
}

// NewEncoder returns an Encoder for schema that keeps the last history
// committed snapshots (DefaultHistory when history <= 0) as bases for deltas.
func NewEncoder(schema Schema, history int) (*Encoder, error) {
	if err := schema.Validate(); err != nil {
		return nil, err
	}
	if history <= 0 {
		history = DefaultHistory
	}
	return &Encoder{
		schema:  slices.Clone(schema),
		nf:      len(schema),
		history: newRing(history),
		entries: make([]cacheEntry, 0, history+1),
	}, nil
}

// Schema returns the encoder's schema.
func (e *Encoder) Schema() Schema { return slices.Clone(e.schema) }

// Set adds entity id to the world or replaces its values, one per schema
// field in schema order, quantized now (NaN as 0, out of range values
// saturated to the int64 range). It panics if the number of values differs from the
// schema's, as that is a bug in the caller, not a runtime condition.
func (e *Encoder) Set(id uint32, values ...float64) {
	if len(values) != e.nf {
		panic(fmt.Sprintf("statesync: Set got %d values for %d fields", len(values), e.nf))
	}
	i, found := slices.BinarySearch(e.ids, id)
	if !found {
		e.ids = slices.Insert(e.ids, i, id)
		n := len(e.vals)
		e.vals = slices.Grow(e.vals, e.nf)[:n+e.nf]
		copy(e.vals[(i+1)*e.nf:], e.vals[i*e.nf:n])
	}
	row := e.vals[i*e.nf : (i+1)*e.nf]
	for k, v := range values {
		row[k] = quantize(v, e.schema[k].Quantum)
	}
}

// Remove deletes entity id from the world; removing an absent id does
// nothing.
func (e *Encoder) Remove(id uint32) {
	i, found := slices.BinarySearch(e.ids, id)
	if !found {
		return
	}
	e.ids = slices.Delete(e.ids, i, i+1)
	e.vals = slices.Delete(e.vals, i*e.nf, (i+1)*e.nf)
}

// Len returns the number of entities in the world being built.
func (e *Encoder) Len() int { return len(e.ids) }

// Tick returns the latest committed tick, or 0 before the first Commit.
func (e *Encoder) Tick() uint32 {
	if s := e.history.latest(); s != nil {
		return s.tick
	}
	return 0
}

// Commit snapshots the world as tick, which must be above every tick
// committed before (tick 0 means "no baseline" on the wire). The oldest
// snapshot beyond the history is dropped and its memory reused.
func (e *Encoder) Commit(tick uint32) error {
	if tick == 0 || tick <= e.Tick() {
		return fmt.Errorf("statesync: commit tick %d, want above %d", tick, e.Tick())
	}
	if len(e.ids) > MaxEntities {
		return fmt.Errorf("statesync: %d entities, at most %d fit a frame", len(e.ids), MaxEntities)
	}
	e.history.push().set(tick, e.ids, e.vals)
	e.cache = e.cache[:0]
	e.entries = e.entries[:0]
	return nil
}

// AppendFrame appends the latest committed snapshot encoded against the
// snapshot of tick base, and returns the base it used: base itself, or 0
// for a full snapshot when base is 0, no longer held, or newer than the
// latest tick. Send usedBase as the frame's base tick. Before the first
// Commit there is nothing to send and dst comes back unchanged.
//
// Each (tick, base) pair is encoded once; later calls copy the cached
// bytes.
func (e *Encoder) AppendFrame(dst []byte, base uint32) (out []byte, usedBase uint32) {
	cur := e.history.latest()
	if cur == nil {
		return dst, 0
	}
	var b *snapshot
	if base != 0 {
		b = e.history.find(base)
	}
	if b == nil {
		base = 0
	}
	for _, c := range e.entries {
		if c.base == base {
			return append(dst, e.cache[c.start:c.end]...), base
		}
	}
	start := len(e.cache)
	if b == nil {
		e.cache = appendFull(e.cache, e.nf, cur)
	} else {
		e.cache = appendDelta(e.cache, e.nf, b, cur)
	}
	e.encodes++
	e.entries = append(e.entries, cacheEntry{base: base, start: start, end: len(e.cache)})
	return append(dst, e.cache[start:]...), base
}
