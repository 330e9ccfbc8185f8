package statesync

import (
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// packet is a frame or an acknowledgement in flight.
type packet struct {
	due        int // simulation step at which it arrives
	tick, base uint32
	data       []byte
}

// TestLossyNetwork is the property the codec exists for: whatever frames
// are lost, late or reordered, the client's view always equals the server's
// quantized world at the tick the client shows.
func TestLossyNetwork(t *testing.T) {
	for _, tc := range []struct {
		name                string
		deliver, late       float64 // probability a packet arrives; that it is delayed
		encHist, decHist    int
		wantFull, wantStale bool // the run must exercise these paths
		wantUnknown         bool
	}{
		{name: "reliable", deliver: 1, encHist: 64, decHist: 64},
		{name: "lossy", deliver: 0.7, late: 0.2, encHist: 64, decHist: 64, wantStale: true},
		{name: "very lossy short server history", deliver: 0.3, late: 0.3, encHist: 4, decHist: 64, wantFull: true, wantStale: true},
		{name: "short client history", deliver: 0.6, late: 0.5, encHist: 64, decHist: 2, wantStale: true, wantUnknown: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats := simulate(t, tc.deliver, tc.late, tc.encHist, tc.decHist)
			t.Logf("%+v", stats)
			if stats.deltas == 0 || (tc.wantFull && stats.fulls < 2) || (tc.wantStale && stats.stale == 0) || (tc.wantUnknown && stats.unknown == 0) {
				t.Fatalf("run did not exercise the paths it is for: %+v", stats)
			}
		})
	}
}

type simStats struct {
	steps, fulls, deltas, stale, unknown, lost int
}

func simulate(t *testing.T, deliver, late float64, encHist, decHist int) simStats {
	const steps = 1500
	rng := rand.New(rand.NewPCG(42, uint64(encHist*1000+decHist)))
	enc, dec := newPair(t, testSchema, encHist, decHist)

	world := map[uint32][]float64{}
	nextID := uint32(1)
	spawn := func() {
		id := nextID
		if rng.IntN(4) == 0 {
			id += uint32(rng.IntN(1000)) // gaps in ids
		}
		nextID = id + 1
		world[id] = []float64{rng.Float64()*200 - 100, rng.Float64()*200 - 100, 100}
	}
	for range 40 {
		spawn()
	}
	var removed []uint32

	// expected[tick] is the server's quantized world at tick, computed apart
	// from the encoder.
	expected := map[uint32]map[uint32][]int64{}
	var toClient, toServer []packet
	var serverAck uint32
	var stats simStats
	needSnapshot := false
	tick := uint32(0)

	for step := range steps {
		// The game moves things; some stand still, some die or come back.
		// Ids are visited in order so the seed alone decides the run.
		for _, id := range slices.Sorted(maps.Keys(world)) {
			v := world[id]
			switch r := rng.Float64(); {
			case r < 0.01:
				delete(world, id)
				enc.Remove(id)
				removed = append(removed, id)
			case r < 0.3:
			case r < 0.35:
				v[2] -= float64(rng.IntN(10))
			default:
				v[0] += rng.NormFloat64() * 0.3
				v[1] += rng.NormFloat64() * 0.3
			}
		}
		if rng.IntN(3) == 0 {
			spawn()
		}
		if len(removed) > 0 && rng.IntN(10) == 0 {
			id := removed[rng.IntN(len(removed))]
			if _, ok := world[id]; !ok {
				world[id] = []float64{rng.Float64() * 10, rng.Float64() * 10, 100}
			}
		}
		for id, v := range world {
			enc.Set(id, v...)
		}
		tick += 1 + uint32(rng.IntN(10)/9) // now and then a tick is skipped
		commit(t, enc, tick)
		q := make(map[uint32][]int64, len(world))
		for id, v := range world {
			row := make([]int64, len(v))
			for k, f := range testSchema {
				row[k] = int64(math.Round(v[k] / f.Quantum))
			}
			q[id] = row
		}
		expected[tick] = q
		if step%100 == 0 {
			for old := range expected {
				if old+400 < tick {
					delete(expected, old)
				}
			}
		}

		// Acks arriving at the server: the newest wins, a snapshot request
		// (0) always does.
		toServer = arrivals(toServer, step, func(p packet) {
			if p.tick == 0 || p.tick > serverAck {
				serverAck = p.tick
			}
		})

		// The server sends this tick against the last ack it has.
		frame, used := enc.AppendFrame(nil, serverAck)
		toClient = sendPacket(rng, toClient, packet{due: step, tick: tick, base: used, data: frame}, deliver, late, &stats.lost)

		// The client applies what arrives, in whatever order.
		rng.Shuffle(len(toClient), func(i, j int) { toClient[i], toClient[j] = toClient[j], toClient[i] })
		toClient = arrivals(toClient, step, func(p packet) {
			before := dec.Tick()
			err := dec.Apply(p.tick, p.base, p.data)
			switch {
			case errors.Is(err, ErrUnknownBase):
				stats.unknown++
				needSnapshot = true
			case err != nil:
				t.Fatalf("step %d: apply tick %d base %d: %v", step, p.tick, p.base, err)
			case dec.Tick() == before:
				stats.stale++
			case p.base == 0:
				stats.fulls++
				needSnapshot = false
			default:
				stats.deltas++
				needSnapshot = false
			}
		})
		if dec.Tick() != 0 {
			checkView(t, dec, dec.Tick(), expected)
		}
		ack := dec.Tick()
		if needSnapshot {
			ack = 0
		}
		toServer = sendPacket(rng, toServer, packet{due: step, tick: ack}, deliver, late, &stats.lost)
		stats.steps++
	}

	// Once the network heals the client catches up with the server.
	arrivals(toServer, math.MaxInt, func(p packet) {
		if p.tick == 0 || p.tick > serverAck {
			serverAck = p.tick
		}
	})
	for range 2 {
		frame, used := enc.AppendFrame(nil, serverAck)
		err := dec.Apply(tick, used, frame)
		if errors.Is(err, ErrUnknownBase) {
			serverAck = 0
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		serverAck = dec.Tick()
	}
	if dec.Tick() != tick {
		t.Fatalf("client at tick %d after the network healed, server at %d", dec.Tick(), tick)
	}
	checkView(t, dec, tick, expected)
	return stats
}

// sendPacket queues p unless it is lost, delaying it now and then so it
// arrives after later packets.
func sendPacket(rng *rand.Rand, q []packet, p packet, deliver, late float64, lost *int) []packet {
	if rng.Float64() >= deliver {
		*lost++
		return q
	}
	if rng.Float64() < late {
		p.due += 1 + rng.IntN(5)
	}
	return append(q, p)
}

// arrivals hands fn the packets due by step, in queue order, and returns
// the rest.
func arrivals(q []packet, step int, fn func(packet)) []packet {
	rest := q[:0]
	for _, p := range q {
		if p.due <= step {
			fn(p)
		} else {
			rest = append(rest, p)
		}
	}
	return rest
}

func checkView(t *testing.T, dec *Decoder, tick uint32, expected map[uint32]map[uint32][]int64) {
	t.Helper()
	want, ok := expected[tick]
	if !ok {
		t.Fatalf("client shows tick %d, which the server never committed or is long gone", tick)
	}
	if dec.Len() != len(want) {
		t.Fatalf("tick %d: client has %d entities, server had %d", tick, dec.Len(), len(want))
	}
	for id, vals := range dec.Range {
		w, ok := want[id]
		if !ok {
			t.Fatalf("tick %d: client has entity %d the server did not", tick, id)
		}
		for k, f := range testSchema {
			if vals[k] != float64(w[k])*f.Quantum {
				t.Fatalf("tick %d entity %d %s: client %v, server %v", tick, id, f.Name, vals[k], float64(w[k])*f.Quantum)
			}
		}
	}
}
