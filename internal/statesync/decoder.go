package statesync

import (
	"fmt"
	"slices"
)

// Decoder rebuilds a room's entity state on the client from the frames it
// receives. It keeps the states of the last ticks it applied, because the
// server encodes against the tick the client acknowledged, which may be
// older than the newest one applied by the time the frame arrives.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	schema Schema
	nf     int

	history ring

	// Decoding goes into scratch, which is swapped into the ring only on
	// success, so a bad frame leaves the state untouched and a frame can
	// use as its base the slot it is about to replace.
	scratch snapshot
	removed []uint32
	row     []float64
	empty   snapshot // the view before any frame
}

// NewDecoder returns a Decoder for schema that keeps the last history
// applied states (DefaultHistory when history <= 0) as bases for deltas.
func NewDecoder(schema Schema, history int) (*Decoder, error) {
	if err := schema.Validate(); err != nil {
		return nil, err
	}
	if history <= 0 {
		history = DefaultHistory
	}
	return &Decoder{
		schema:  slices.Clone(schema),
		nf:      len(schema),
		history: newRing(history),
		row:     make([]float64, len(schema)),
	}, nil
}

// Apply decodes the frame for tick encoded against base (0 for a full
// snapshot) and makes it the current view. A frame for a tick at or below
// the current one is late or duplicated and is ignored. A delta against a
// tick not held returns ErrUnknownBase; the client should then ask for a
// full snapshot. Bad data returns an error wrapping ErrMalformed. On any
// error the state is unchanged.
func (d *Decoder) Apply(tick, base uint32, data []byte) error {
	if tick == 0 {
		return fmt.Errorf("%w: tick 0", ErrMalformed)
	}
	if tick <= d.Tick() {
		return nil
	}
	var err error
	if base == 0 {
		err = decodeFull(&d.scratch, d.nf, data)
	} else {
		b := d.history.find(base)
		if b == nil {
			return fmt.Errorf("%w: %d", ErrUnknownBase, base)
		}
		d.removed, err = decodeDelta(&d.scratch, b, d.nf, data, d.removed)
	}
	if err != nil {
		return err
	}
	d.scratch.tick = tick
	slot := d.history.push()
	*slot, d.scratch = d.scratch, *slot
	return nil
}

// Reset forgets every state, for instance when the room restarts its ticks.
func (d *Decoder) Reset() { d.history.reset() }

// Schema returns the decoder's schema.
func (d *Decoder) Schema() Schema { return slices.Clone(d.schema) }

// Tick returns the tick of the current view, or 0 before any frame.
func (d *Decoder) Tick() uint32 { return d.view().tick }

// view returns the current state, empty before any frame.
func (d *Decoder) view() *snapshot {
	if s := d.history.latest(); s != nil {
		return s
	}
	return &d.empty
}

// Len returns the number of entities in the current view.
func (d *Decoder) Len() int { return len(d.view().ids) }

// Get appends entity id's values, in schema order, to dst[:0] and reports
// whether the entity is in the current view. Passing the previous result
// as dst avoids allocating.
func (d *Decoder) Get(id uint32, dst []float64) ([]float64, bool) {
	v := d.view()
	i, ok := slices.BinarySearch(v.ids, id)
	if !ok {
		return dst[:0], false
	}
	dst = dst[:0]
	for k, q := range v.vals[i*d.nf : (i+1)*d.nf] {
		dst = append(dst, float64(q)*d.schema[k].Quantum)
	}
	return dst, true
}

// Range calls fn for each entity of the current view in ascending id order
// until fn returns false. values is reused between calls: copy it to keep
// it. Range has the shape of an iter.Seq2, so `for id, v := range d.Range`
// works.
func (d *Decoder) Range(fn func(id uint32, values []float64) bool) {
	v := d.view()
	for i, id := range v.ids {
		for k, q := range v.vals[i*d.nf : (i+1)*d.nf] {
			d.row[k] = float64(q) * d.schema[k].Quantum
		}
		if !fn(id, d.row) {
			return
		}
	}
}
