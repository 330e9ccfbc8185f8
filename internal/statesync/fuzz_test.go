package statesync

import (
	"errors"
	"slices"
	"testing"
)

type frame struct {
	tick, base uint32
	data       []byte
}

// fuzzHistory builds, with the real encoder, the frames a client holds
// before the fuzzed one (ticks 1 and 2) and valid frames for tick 3 against
// each base, so the fuzzer starts from inputs that reach deep into Apply.
func fuzzHistory(t testing.TB) (held, next []frame) {
	enc, err := NewEncoder(testSchema, 0)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint32(1); id <= 5; id++ {
		enc.Set(id*3, float64(id), -float64(id), 100)
	}
	commit(t, enc, 1)
	f1, _ := enc.AppendFrame(nil, 0)
	enc.Set(3, 1.25, -1, 90)
	enc.Remove(9)
	enc.Set(200, 7, 7, 7)
	commit(t, enc, 2)
	f2, _ := enc.AppendFrame(nil, 1)
	held = []frame{{1, 0, f1}, {2, 1, f2}}

	enc.Set(3, 1.5, -1.25, 90)
	enc.Set(6, -1e5, 1e5, 100)
	enc.Remove(15)
	enc.Set(9, 0, 0, 1)
	enc.Set(1<<32-1, 0.01, 0.02, 3)
	commit(t, enc, 3)
	for _, base := range []uint32{0, 1, 2} {
		f, used := enc.AppendFrame(nil, base)
		next = append(next, frame{3, used, f})
	}
	return held, next
}

func FuzzDecoderApply(f *testing.F) {
	held, next := fuzzHistory(f)
	for _, fr := range append(held, next...) {
		f.Add(uint32(3), fr.base, fr.data)
	}
	f.Add(uint32(3), uint32(2), []byte{0, 0})
	f.Add(uint32(3), uint32(0), []byte{0})

	f.Fuzz(func(t *testing.T, tick, base uint32, data []byte) {
		dec, err := NewDecoder(testSchema, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range held {
			if err := dec.Apply(fr.tick, fr.base, fr.data); err != nil {
				t.Fatal(err)
			}
		}
		before := dec.view()
		beforeIDs, beforeVals := slices.Clone(before.ids), slices.Clone(before.vals)

		err = dec.Apply(tick, base, data)
		v := dec.view()
		if err != nil || tick <= 2 {
			if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownBase) {
				t.Fatalf("untyped error %v", err)
			}
			if dec.Tick() != 2 || !slices.Equal(v.ids, beforeIDs) || !slices.Equal(v.vals, beforeVals) {
				t.Fatal("state changed by a rejected or late frame")
			}
			return
		}

		if dec.Tick() != tick || len(v.ids) > MaxEntities || len(v.vals) != len(v.ids)*len(testSchema) {
			t.Fatalf("bad state: tick %d, %d ids, %d values", dec.Tick(), len(v.ids), len(v.vals))
		}
		for i := 1; i < len(v.ids); i++ {
			if v.ids[i] <= v.ids[i-1] {
				t.Fatalf("ids not ascending: %v", v.ids)
			}
		}
		// Whatever was accepted must survive re-encoding, as a full snapshot
		// and as a delta against the same base.
		var got snapshot
		if err := decodeFull(&got, len(testSchema), appendFull(nil, len(testSchema), v)); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.ids, v.ids) || !slices.Equal(got.vals, v.vals) {
			t.Fatal("full snapshot of the accepted state does not round-trip")
		}
		if base != 0 {
			b := dec.history.find(base)
			if b == nil {
				t.Fatalf("base %d accepted but not held", base)
			}
			if _, err := decodeDelta(&got, b, len(testSchema), appendDelta(nil, len(testSchema), b, v), nil); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.ids, v.ids) || !slices.Equal(got.vals, v.vals) {
				t.Fatal("delta of the accepted state does not round-trip")
			}
		}
	})
}
