package statesync

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Colyseus publishes 9 bytes for one entity's x/y change and 668 bytes for
// 100 entities moving; these are the figures to beat.
const (
	colyseus1   = 9
	colyseus100 = 668
)

var xySchema = Schema{{Name: "x", Quantum: 0.01}, {Name: "y", Quantum: 0.01}}

// step is 5 units/s at 20 Hz: 0.25 units, 25 quanta of 0.01 per tick.
const step = 5.0 / 20

// movingWorld commits n entities at random positions as tick 1, moves each
// one step per axis in a random direction, commits tick 2, and returns the
// full snapshot and the delta against tick 1.
func movingWorld(t testing.TB, n int) (full, delta []byte) {
	t.Helper()
	enc, dec := newPair(t, xySchema, 0, 0)
	rng := rand.New(rand.NewPCG(5, 20))
	xs, ys := make([]float64, n), make([]float64, n)
	for i := range n {
		xs[i], ys[i] = rng.Float64()*200-100, rng.Float64()*200-100
		enc.Set(uint32(i+1), xs[i], ys[i])
	}
	commit(t, enc, 1)
	full = send(t, enc, dec, 0)
	for i := range n {
		xs[i] += step * math.Copysign(1, rng.Float64()-0.5)
		ys[i] += step * math.Copysign(1, rng.Float64()-0.5)
		enc.Set(uint32(i+1), xs[i], ys[i])
	}
	commit(t, enc, 2)
	delta = send(t, enc, dec, 1)
	return full, delta
}

func TestFrameSizes(t *testing.T) {
	full1, delta1 := movingWorld(t, 1)
	full100, delta100 := movingWorld(t, 100)
	t.Logf("1 entity moving in x/y by 25 quanta: delta %d bytes (Colyseus %d), full snapshot %d bytes", len(delta1), colyseus1, len(full1))
	t.Logf("100 entities moving likewise: delta %d bytes (Colyseus %d), full snapshot %d bytes", len(delta100), colyseus100, len(full100))
	if len(delta1) > 6 {
		t.Errorf("1-entity delta is %d bytes, want at most 6", len(delta1))
	}
	if len(delta1) > colyseus1 {
		t.Errorf("1-entity delta is %d bytes, Colyseus does it in %d", len(delta1), colyseus1)
	}
	if len(delta100) >= colyseus100 {
		t.Errorf("100-entity delta is %d bytes, Colyseus does it in %d", len(delta100), colyseus100)
	}
}
