package statesync

import (
	"math/rand/v2"
	"testing"
)

// benchEncode measures a room's tick: n entities move, Commit, and one
// frame encoded against the previous tick, as for a client that keeps up.
func benchEncode(b *testing.B, n int) {
	enc, err := NewEncoder(xySchema, 0)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	xs, ys := make([]float64, n), make([]float64, n)
	for i := range n {
		xs[i], ys[i] = rng.Float64()*200-100, rng.Float64()*200-100
	}
	dst := make([]byte, 0, 64<<10)
	tick := uint32(0)
	move := func() {
		for i := range n {
			xs[i] += step
			ys[i] -= step
			enc.Set(uint32(i+1), xs[i], ys[i])
		}
		tick++
		if err := enc.Commit(tick); err != nil {
			b.Fatal(err)
		}
		dst, _ = enc.AppendFrame(dst[:0], tick-1)
	}
	for range DefaultHistory + 1 { // fill the ring so memory is reused
		move()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		move()
	}
	b.ReportMetric(float64(len(dst)), "B/frame")
}

func BenchmarkEncode1Entity(b *testing.B)     { benchEncode(b, 1) }
func BenchmarkEncode100Entities(b *testing.B) { benchEncode(b, 100) }

// BenchmarkEncodeShared100Clients is one tick of a 100-entity room with 100 clients
// on the same base: one encoding, 99 copies from the cache.
func BenchmarkEncodeShared100Clients(b *testing.B) {
	enc, err := NewEncoder(xySchema, 0)
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	xs := make([]float64, n)
	dst := make([]byte, 0, 64<<10)
	tick := uint32(0)
	move := func() {
		for i := range n {
			xs[i] += step
			enc.Set(uint32(i+1), xs[i], -xs[i])
		}
		tick++
		if err := enc.Commit(tick); err != nil {
			b.Fatal(err)
		}
		for range 100 {
			dst, _ = enc.AppendFrame(dst[:0], tick-1)
		}
	}
	for range DefaultHistory + 1 {
		move()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		move()
	}
}

// BenchmarkDecode100Entities applies a 100-entity delta per tick. Every
// entity moves by the same step each tick, so one encoded delta serves as
// the frame for every tick.
func BenchmarkDecode100Entities(b *testing.B) {
	const n = 100
	enc, dec := newPair(b, xySchema, 0, 0)
	for i := range n {
		enc.Set(uint32(i+1), float64(i), float64(-i))
	}
	commit(b, enc, 1)
	full, _ := enc.AppendFrame(nil, 0)
	for i := range n {
		enc.Set(uint32(i+1), float64(i)+step, float64(-i)-step)
	}
	commit(b, enc, 2)
	delta, _ := enc.AppendFrame(nil, 1)
	if err := dec.Apply(1, 0, full); err != nil {
		b.Fatal(err)
	}
	tick := uint32(1)
	for range DefaultHistory + 1 {
		tick++
		if err := dec.Apply(tick, tick-1, delta); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tick++
		if err := dec.Apply(tick, tick-1, delta); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(delta)), "B/frame")
}
