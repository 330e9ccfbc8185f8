// Package statesync encodes an authoritative room's entity state compactly,
// as full snapshots or as deltas against each client's acknowledged baseline,
// so that a lost or late frame never corrupts a client's view.
package statesync

import (
	"errors"
	"fmt"
	"math"
)

const (
	// MaxFields bounds a schema so a field bitmask fits in a uint32.
	MaxFields = 32
	// MaxEntities bounds the entities of one snapshot. The decoder rejects
	// larger frames so hostile input cannot make it allocate without limit.
	MaxEntities = 65536
	// DefaultHistory is the number of snapshots kept when none is given:
	// 3.2 s at 20 Hz, enough for an acknowledgement to make a round trip.
	DefaultHistory = 64
)

var (
	// ErrUnknownBase reports a delta against a tick the decoder no longer
	// holds (or never applied). The client should ask for a full snapshot,
	// for instance by acknowledging tick 0.
	ErrUnknownBase = errors.New("statesync: unknown base tick")
	// ErrMalformed reports frame data that does not decode.
	ErrMalformed = errors.New("statesync: malformed frame")
)

// Field is one per-entity value. Quantum is the resolution kept on the wire:
// a value v travels as round(v/Quantum) and decodes as that integer times
// Quantum.
type Field struct {
	Name    string
	Quantum float64
}

// Schema is the ordered list of fields every entity carries. The order is
// part of the wire format: bit i of a field mask refers to Schema[i].
type Schema []Field

// Validate reports whether s can be used: 1 to MaxFields fields, names
// non-empty and unique, quanta finite and positive.
func (s Schema) Validate() error {
	if len(s) == 0 || len(s) > MaxFields {
		return fmt.Errorf("statesync: schema has %d fields, want 1 to %d", len(s), MaxFields)
	}
	seen := make(map[string]bool, len(s))
	for i, f := range s {
		if f.Name == "" {
			return fmt.Errorf("statesync: field %d has no name", i)
		}
		if seen[f.Name] {
			return fmt.Errorf("statesync: field %q appears twice", f.Name)
		}
		seen[f.Name] = true
		if !(f.Quantum > 0) || math.IsInf(f.Quantum, 0) {
			return fmt.Errorf("statesync: field %q has quantum %v, want a finite value > 0", f.Name, f.Quantum)
		}
	}
	return nil
}

// quantize maps v to its wire integer. NaN becomes 0 and values beyond the
// int64 range saturate, because a float-to-int conversion out of range has
// no defined result in Go.
func quantize(v, quantum float64) int64 {
	r := math.Round(v / quantum)
	switch {
	case r != r:
		return 0
	case r >= math.MaxInt64:
		return math.MaxInt64
	case r <= math.MinInt64:
		return math.MinInt64
	}
	return int64(r)
}

// snapshot is one tick's world, quantized: ids ascending, vals holding
// len(schema) values per entity in the same order.
type snapshot struct {
	tick uint32
	ids  []uint32
	vals []int64
}

// set copies src into s, reusing s's memory.
func (s *snapshot) set(tick uint32, ids []uint32, vals []int64) {
	s.tick = tick
	s.ids = append(s.ids[:0], ids...)
	s.vals = append(s.vals[:0], vals...)
}

// ring holds the last snapshots in tick order, overwriting the oldest.
// Ticks only grow, so lookups are binary searches.
type ring struct {
	slots  []snapshot
	newest int // index of the newest snapshot
	n      int // snapshots held
}

func newRing(size int) ring { return ring{slots: make([]snapshot, size), newest: -1} }

// latest returns the newest snapshot, or nil when empty.
func (r *ring) latest() *snapshot {
	if r.n == 0 {
		return nil
	}
	return &r.slots[r.newest]
}

// at returns the i-th held snapshot, oldest first.
func (r *ring) at(i int) *snapshot {
	return &r.slots[(r.newest-r.n+1+i+len(r.slots))%len(r.slots)]
}

// find returns the held snapshot for tick, or nil.
func (r *ring) find(tick uint32) *snapshot {
	lo, hi := 0, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.at(m).tick < tick {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < r.n && r.at(lo).tick == tick {
		return r.at(lo)
	}
	return nil
}

// push makes the oldest slot the newest and returns it for overwriting.
func (r *ring) push() *snapshot {
	r.newest = (r.newest + 1) % len(r.slots)
	r.n = min(r.n+1, len(r.slots))
	return &r.slots[r.newest]
}

// reset forgets every snapshot but keeps their memory.
func (r *ring) reset() { r.newest, r.n = -1, 0 }
