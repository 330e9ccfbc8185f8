package match

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Two engines, as two Rally replicas would run them, share one real Redis
// pool: tickets pour in on both while both run passes concurrently, and no
// ticket ever lands in two matches.
func TestTwoEnginesOnRedisNeverDoubleAssign(t *testing.T) {
	srv := startRedis(t)
	rules := must(ParseRules([]byte(duelRules)))
	alloc := &recordingAllocator{}
	var engines [2]*Engine
	for i := range engines {
		pool := NewRedisPool(newRedisClient(t, srv), "rally:test:")
		engines[i] = NewEngine(rules, pool, alloc, Options{Seed: uint64(i + 1), Shared: true})
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	const perEngine = 400
	for i, e := range engines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for n := range perEngine {
				tk := &Ticket{Queue: "q", Players: []Player{{UserID: fmt.Sprintf("e%d-%d", i, n), Mu: 1500 + rng.NormFloat64()*60}}}
				if err := e.Submit(ctx, tk); err != nil {
					t.Error(err)
					return
				}
				if n%20 == 0 {
					if _, err := e.Pass(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
		wg.Go(func() {
			for range 40 {
				if _, err := e.Pass(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, e := range engines { // drain what is left
		if _, err := e.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for _, m := range alloc.matches {
		for _, tk := range m.Tickets {
			if other, dup := seen[tk.ID]; dup {
				t.Fatalf("ticket %s in matches %s and %s", tk.ID, other, m.ID)
			}
			seen[tk.ID] = m.ID
		}
	}
	if len(seen) < perEngine {
		t.Fatalf("only %d of %d tickets matched", len(seen), 2*perEngine)
	}
	t.Logf("%d matches, %d tickets, claims lost to the other engine: %v and %v", len(alloc.matches), len(seen),
		testutil.ToFloat64(engines[0].m.claimConflicts), testutil.ToFloat64(engines[1].m.claimConflicts))
}
