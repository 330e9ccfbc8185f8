package statesync

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// testSchema is a typical moving entity: position to the centimetre, whole
// hit points.
var testSchema = Schema{{Name: "x", Quantum: 0.01}, {Name: "y", Quantum: 0.01}, {Name: "hp", Quantum: 1}}

func newPair(t testing.TB, schema Schema, encHistory, decHistory int) (*Encoder, *Decoder) {
	t.Helper()
	enc, err := NewEncoder(schema, encHistory)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(schema, decHistory)
	if err != nil {
		t.Fatal(err)
	}
	return enc, dec
}

// sameView fails unless dec's current view is exactly s.
func sameView(t testing.TB, dec *Decoder, s *snapshot) {
	t.Helper()
	v := dec.view()
	if dec.Tick() != s.tick || !slices.Equal(v.ids, s.ids) || !slices.Equal(v.vals, s.vals) {
		t.Fatalf("decoder at tick %d has ids %v vals %v, want tick %d ids %v vals %v",
			dec.Tick(), v.ids, v.vals, s.tick, s.ids, s.vals)
	}
}

// send encodes the latest tick against base and applies it to dec.
func send(t testing.TB, enc *Encoder, dec *Decoder, base uint32) []byte {
	t.Helper()
	frame, used := enc.AppendFrame(nil, base)
	if err := dec.Apply(enc.Tick(), used, frame); err != nil {
		t.Fatalf("apply tick %d base %d: %v", enc.Tick(), used, err)
	}
	sameView(t, dec, enc.history.latest())
	return frame
}

func commit(t testing.TB, enc *Encoder, tick uint32) {
	t.Helper()
	if err := enc.Commit(tick); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaValidate(t *testing.T) {
	many := make(Schema, MaxFields+1)
	for i := range many {
		many[i] = Field{Name: string(rune('a' + i)), Quantum: 1}
	}
	for _, tc := range []struct {
		schema Schema
		want   string
	}{
		{testSchema, ""},
		{many[:MaxFields], ""},
		{nil, "0 fields"},
		{many, "33 fields"},
		{Schema{{Name: "", Quantum: 1}}, "no name"},
		{Schema{{Name: "x", Quantum: 1}, {Name: "x", Quantum: 1}}, "twice"},
		{Schema{{Name: "x", Quantum: 0}}, "quantum"},
		{Schema{{Name: "x", Quantum: -1}}, "quantum"},
		{Schema{{Name: "x", Quantum: math.NaN()}}, "quantum"},
		{Schema{{Name: "x", Quantum: math.Inf(1)}}, "quantum"},
	} {
		err := tc.schema.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: got %v, want %q", tc.schema, err, tc.want)
		}
	}
	if _, err := NewEncoder(nil, 0); err == nil {
		t.Error("NewEncoder accepted an empty schema")
	}
	if _, err := NewDecoder(nil, 0); err == nil {
		t.Error("NewDecoder accepted an empty schema")
	}
}

func TestQuantize(t *testing.T) {
	for _, tc := range []struct {
		v, quantum float64
		want       int64
	}{
		{0, 0.01, 0},
		{1.234, 0.01, 123},
		{1.235, 0.01, 124},
		{-1.235, 0.01, -124},
		{0.5, 1, 1},
		{-0.5, 1, -1},
		{math.NaN(), 1, 0},
		{math.Inf(1), 1, math.MaxInt64},
		{math.Inf(-1), 1, math.MinInt64},
		{1e300, 0.01, math.MaxInt64},
		{-1e300, 0.01, math.MinInt64},
	} {
		if got := quantize(tc.v, tc.quantum); got != tc.want {
			t.Errorf("quantize(%v, %v) = %d, want %d", tc.v, tc.quantum, got, tc.want)
		}
	}
}

// TestQuantizationError checks that values come back within half a quantum.
func TestQuantizationError(t *testing.T) {
	enc, dec := newPair(t, testSchema, 0, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[uint32][]float64{}
	for id := range uint32(500) {
		v := []float64{rng.Float64()*2000 - 1000, rng.NormFloat64() * 50, rng.Float64() * 100}
		want[id] = v
		enc.Set(id, v...)
	}
	commit(t, enc, 1)
	send(t, enc, dec, 0)
	var got []float64
	for id, v := range want {
		var ok bool
		got, ok = dec.Get(id, got)
		if !ok {
			t.Fatalf("entity %d missing", id)
		}
		for k, f := range testSchema {
			if d := math.Abs(got[k] - v[k]); d > f.Quantum/2*(1+1e-9) {
				t.Fatalf("entity %d field %s: sent %v got %v, off by %v > quantum/2", id, f.Name, v[k], got[k], d)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	enc, dec := newPair(t, testSchema, 8, 8)
	fresh := func() *Decoder {
		_, d := newPair(t, testSchema, 8, 8)
		return d
	}

	// Full snapshot.
	enc.Set(7, 1.5, -2.25, 100)
	enc.Set(3, 0, 0, 50)
	enc.Set(1<<32-1, 1e6, -1e6, 1)
	enc.Set(1000, 10, 10, 10)
	commit(t, enc, 1)
	if frame, used := enc.AppendFrame(nil, 0); used != 0 || len(frame) == 0 {
		t.Fatalf("full frame: used %d, %d bytes", used, len(frame))
	}
	send(t, enc, dec, 0)
	if got, ok := dec.Get(7, nil); !ok || !slices.Equal(got, []float64{1.5, -2.25, 100}) {
		t.Fatalf("Get(7) = %v, %v", got, ok)
	}

	// Change one field of one entity, another entity entirely.
	enc.Set(7, 1.5, -2.0, 100)
	enc.Set(3, 1, 2, 49)
	commit(t, enc, 2)
	send(t, enc, dec, 1)

	// Add, remove, change; the same tick as a full snapshot to a new client.
	enc.Remove(3)
	enc.Remove(12345) // absent: no effect
	enc.Set(4, -5, 5, 5)
	enc.Set(2000, 1, 1, 1)
	enc.Set(1<<32-1, 1e6+0.01, -1e6, 1)
	commit(t, enc, 5) // ticks may skip
	send(t, enc, dec, 2)
	send(t, enc, fresh(), 0)

	// Delta against an older base than the client's newest state.
	enc.Set(7, 9, 9, 9)
	enc.Remove(4)
	commit(t, enc, 6)
	send(t, enc, dec, 2)

	// Remove everything, then an id comes back with new values.
	for _, id := range []uint32{7, 1000, 2000, 1<<32 - 1} {
		enc.Remove(id)
	}
	commit(t, enc, 7)
	send(t, enc, dec, 6)
	if dec.Len() != 0 {
		t.Fatalf("Len = %d after removing all", dec.Len())
	}
	enc.Set(7, 3, 3, 3)
	commit(t, enc, 8)
	send(t, enc, dec, 7)
	enc.Set(7, 4, 3, 3)
	commit(t, enc, 9)
	send(t, enc, dec, 6) // 7 was removed and re-added since 6: a change

	// Every field of a 32-field schema, so the mask needs all its bits.
	wide := make(Schema, MaxFields)
	vals := make([]float64, MaxFields)
	for i := range wide {
		wide[i] = Field{Name: string(rune('A' + i)), Quantum: 0.5}
		vals[i] = float64(i)
	}
	wenc, wdec := newPair(t, wide, 0, 0)
	wenc.Set(1, vals...)
	commit(t, wenc, 1)
	send(t, wenc, wdec, 0)
	vals[31] = -7
	wenc.Set(1, vals...)
	commit(t, wenc, 2)
	send(t, wenc, wdec, 1)
	for i := range vals {
		vals[i]++
	}
	wenc.Set(1, vals...)
	wenc.Set(2, vals...)
	commit(t, wenc, 3)
	send(t, wenc, wdec, 2)
}

func TestRangeAndGet(t *testing.T) {
	enc, dec := newPair(t, testSchema, 0, 0)
	if dec.Len() != 0 || dec.Tick() != 0 {
		t.Fatal("new decoder not empty")
	}
	if _, ok := dec.Get(1, nil); ok {
		t.Fatal("Get on empty decoder")
	}
	dec.Range(func(uint32, []float64) bool { t.Fatal("Range on empty decoder"); return false })
	for _, id := range []uint32{30, 10, 20} {
		enc.Set(id, float64(id), 0, 1)
	}
	commit(t, enc, 1)
	send(t, enc, dec, 0)
	var ids []uint32
	for id, v := range dec.Range {
		if v[0] != float64(id) {
			t.Fatalf("entity %d: x = %v", id, v[0])
		}
		ids = append(ids, id)
	}
	if !slices.Equal(ids, []uint32{10, 20, 30}) {
		t.Fatalf("Range order %v", ids)
	}
	n := 0
	dec.Range(func(uint32, []float64) bool { n++; return false })
	if n != 1 {
		t.Fatalf("Range did not stop: %d calls", n)
	}
}

func TestEncoderBases(t *testing.T) {
	enc, err := NewEncoder(testSchema, 3)
	if err != nil {
		t.Fatal(err)
	}
	if frame, used := enc.AppendFrame([]byte("x"), 0); string(frame) != "x" || used != 0 {
		t.Fatalf("before Commit: %q %d", frame, used)
	}
	for tick := uint32(1); tick <= 5; tick++ {
		enc.Set(1, float64(tick), 0, 0)
		commit(t, enc, tick)
	}
	// Held: 3, 4, 5.
	for _, tc := range []struct{ base, used uint32 }{
		{0, 0}, {1, 0}, {2, 0}, {3, 3}, {4, 4}, {5, 5}, {6, 0}, {1 << 31, 0},
	} {
		if _, used := enc.AppendFrame(nil, tc.base); used != tc.used {
			t.Errorf("base %d: used %d, want %d", tc.base, used, tc.used)
		}
	}
	if frame, _ := enc.AppendFrame(nil, 5); !slices.Equal(frame, []byte{0, 0}) {
		t.Errorf("delta against itself = %v, want [0 0]", frame)
	}
	for _, tick := range []uint32{0, 5, 4} {
		if err := enc.Commit(tick); err == nil {
			t.Errorf("Commit(%d) after 5 succeeded", tick)
		}
	}
	if enc.Tick() != 5 {
		t.Fatalf("Tick = %d after failed commits", enc.Tick())
	}
}

// TestFrameCache checks that clients sharing a base share one encoding.
func TestFrameCache(t *testing.T) {
	enc, _ := newPair(t, testSchema, 0, 0)
	enc.Set(1, 1, 1, 1)
	commit(t, enc, 1)
	enc.Set(1, 2, 1, 1)
	commit(t, enc, 2)
	before := enc.encodes
	a, _ := enc.AppendFrame(nil, 1)
	b, _ := enc.AppendFrame([]byte{9}, 1)
	c, _ := enc.AppendFrame(nil, 0)
	d, _ := enc.AppendFrame(nil, 77) // unknown: the same full snapshot as base 0
	if got := enc.encodes - before; got != 2 {
		t.Fatalf("%d encodings for 2 distinct bases", got)
	}
	if !slices.Equal(a, b[1:]) || b[0] != 9 || !slices.Equal(c, d) || slices.Equal(a, c) {
		t.Fatalf("cached frames differ: %v %v %v %v", a, b, c, d)
	}
	enc.Set(1, 3, 1, 1)
	commit(t, enc, 3)
	if e, _ := enc.AppendFrame(nil, 1); slices.Equal(e, a) || enc.encodes-before != 3 {
		t.Fatal("cache not reset by Commit")
	}
}

func TestSetPanicsOnValueCount(t *testing.T) {
	enc, _ := newPair(t, testSchema, 0, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("Set with 2 values for 3 fields did not panic")
		}
	}()
	enc.Set(1, 1, 2)
}

func TestDecoderLateAndUnknown(t *testing.T) {
	enc, dec := newPair(t, testSchema, 0, 2)
	var frames [][]byte
	for tick := uint32(1); tick <= 4; tick++ {
		enc.Set(1, float64(tick), 0, 0)
		commit(t, enc, tick)
		f, _ := enc.AppendFrame(nil, tick-1) // tick-1 = 0 for the first: full
		frames = append(frames, f)
	}
	if err := dec.Apply(2, 1, frames[1]); !errors.Is(err, ErrUnknownBase) {
		t.Fatalf("delta before any state: %v", err)
	}
	if err := dec.Apply(1, 0, frames[0]); err != nil {
		t.Fatal(err)
	}
	if err := dec.Apply(3, 2, frames[2]); !errors.Is(err, ErrUnknownBase) {
		t.Fatalf("delta on a base never applied: %v", err)
	}
	if err := dec.Apply(2, 1, frames[1]); err != nil {
		t.Fatal(err)
	}
	if err := dec.Apply(3, 2, frames[2]); err != nil {
		t.Fatal(err)
	}
	// Late and duplicate frames, even garbage ones, are ignored.
	for _, tick := range []uint32{1, 2, 3} {
		if err := dec.Apply(tick, 0, []byte{0xff}); err != nil || dec.Tick() != 3 {
			t.Fatalf("late frame %d: %v, tick %d", tick, err, dec.Tick())
		}
	}
	// History 2 holds ticks 2 and 3; 1 is gone.
	if err := dec.Apply(4, 1, frames[3]); !errors.Is(err, ErrUnknownBase) {
		t.Fatalf("delta on an evicted base: %v", err)
	}
	if err := dec.Apply(0, 0, frames[0]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("tick 0: %v", err)
	}
	if err := dec.Apply(4, 3, frames[3]); err != nil {
		t.Fatal(err)
	}
	sameView(t, dec, enc.history.latest())
	dec.Reset()
	if dec.Tick() != 0 || dec.Len() != 0 {
		t.Fatal("Reset kept state")
	}
	if err := dec.Apply(4, 3, frames[3]); !errors.Is(err, ErrUnknownBase) {
		t.Fatalf("delta after Reset: %v", err)
	}
}

func TestDecoderMalformed(t *testing.T) {
	schema := Schema{{Name: "x", Quantum: 1}, {Name: "y", Quantum: 1}}
	// Base at tick 1: ids 5 (1, 2) and 9 (3, 4).
	base := []byte{2, 5, 2, 4, 3, 6, 8}
	for _, tc := range []struct {
		name string
		base uint32
		data []byte
	}{
		{"empty full", 0, nil},
		{"truncated full", 0, []byte{1, 5, 2}},
		{"trailing full", 0, []byte{1, 5, 2, 4, 0}},
		{"count beyond data", 0, []byte{100, 1, 1, 1}},
		{"count beyond max", 0, []byte{0x81, 0x80, 0x04}},
		{"bad varint", 0, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"id overflow", 0, []byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0}},
		{"empty delta", 1, nil},
		{"removed beyond base", 1, []byte{3, 0, 0, 0, 0}},
		{"removed not in base", 1, []byte{1, 6, 0}},
		{"removed past base", 1, []byte{1, 10, 0}},
		{"removed and changed", 1, []byte{1, 5, 1, 5, 1, 2}},
		{"mask zero", 1, []byte{0, 1, 5, 0, 2}},
		{"mask beyond fields", 1, []byte{0, 1, 5, 4, 2}},
		{"new entity lacks fields", 1, []byte{0, 1, 6, 1, 2}},
		{"truncated delta", 1, []byte{0, 1, 5, 3, 2}},
		{"trailing delta", 1, []byte{0, 0, 0}},
		{"changed count beyond data", 1, []byte{0, 2, 5, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := NewDecoder(schema, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := dec.Apply(1, 0, base); err != nil {
				t.Fatal(err)
			}
			want := dec.view().vals
			want = slices.Clone(want)
			if err := dec.Apply(2, tc.base, tc.data); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Apply(%v) = %v, want ErrMalformed", tc.data, err)
			}
			if dec.Tick() != 1 || !slices.Equal(dec.view().ids, []uint32{5, 9}) || !slices.Equal(dec.view().vals, want) {
				t.Fatal("state changed by a bad frame")
			}
		})
	}
}

// TestSteadyStateAllocs proves the tick loop and the client allocate nothing
// once the world's size is stable and the rings are full.
func TestSteadyStateAllocs(t *testing.T) {
	const n = 100
	enc, dec := newPair(t, testSchema, 16, 16)
	rng := rand.New(rand.NewPCG(3, 4))
	xs, ys := make([]float64, n), make([]float64, n)
	tick := uint32(0)
	dst := make([]byte, 0, 4096)
	var used uint32
	step := func() {
		for i := range xs {
			xs[i] += 0.25
			ys[i] -= 0.25
			enc.Set(uint32(i), xs[i], ys[i], 100)
		}
		tick++
		if err := enc.Commit(tick); err != nil {
			t.Fatal(err)
		}
		for range 3 { // clients sharing a base use the cache
			dst, used = enc.AppendFrame(dst[:0], tick-1)
		}
		dst, _ = enc.AppendFrame(dst[:0], 0)
		dst, used = enc.AppendFrame(dst[:0], tick-1)
		if err := dec.Apply(tick, used, dst); err != nil {
			t.Fatal(err)
		}
	}
	for i := range xs {
		xs[i], ys[i] = rng.Float64()*100, rng.Float64()*100
	}
	for range 40 {
		step()
	}
	if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
		t.Fatalf("%v allocations per tick, want 0", allocs)
	}
	sameView(t, dec, enc.history.latest())
}
