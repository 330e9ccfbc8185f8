package liveconfig

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var quiet = slog.New(slog.DiscardHandler)

// pairDoc holds one generation n twice, in two keys that must always
// match, and a schema that refuses negative generations.
func pairDoc(n int) Files {
	return Files{
		"pair.yaml":        []byte(fmt.Sprintf("values:\n  left: %d\n  right: %d\n  filler: %q\n", n, n, strings.Repeat("x", n%50))),
		"pair.schema.json": []byte(`{"type":"object","properties":{"left":{"type":"integer","minimum":0}}}`),
	}
}

func TestLiveSwapsAndKeepsTheLastGoodVersion(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := New(LiveOptions{Registerer: reg, Log: quiet, History: 3})
	if l.Current().Version() != "" || len(l.Current().Keys()) != 0 {
		t.Fatal("a new Live is not empty")
	}
	ctx := context.Background()
	changed := l.Changed()
	v1, err := l.Offer(ctx, pairDoc(1), Options{Source: "test"}, time.Now().Add(-10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not closed by the swap")
	}
	bad := pairDoc(2)
	bad["pair.yaml"] = []byte("values:\n  left: -1\n  right: -1\n")
	for range 2 {
		if _, err := l.Offer(ctx, bad, Options{Source: "test"}, time.Time{}); err == nil {
			t.Fatal("an invalid version was accepted")
		}
	}
	if l.Current() != v1 {
		t.Fatal("the last good version was replaced")
	}
	// The same version again changes nothing.
	if again, err := l.Offer(ctx, pairDoc(1), Options{Source: "test"}, time.Time{}); err != nil || again != v1 {
		t.Fatalf("re-offering the live version: %v", err)
	}
	if got := testutil.ToFloat64(l.metrics.reloads.WithLabelValues("test")); got != 1 {
		t.Fatalf("reloads = %v", got)
	}
	if got := testutil.ToFloat64(l.metrics.rejects.WithLabelValues("test")); got != 1 {
		t.Fatalf("rejects = %v, want 1 (a repeated refusal is not counted twice)", got)
	}
	if got := testutil.CollectAndCount(l.metrics.propagation); got != 1 {
		t.Fatalf("propagation observations %d", got)
	}
	h := l.History()
	if len(h) != 2 || h[0].Outcome != "accepted" || h[1].Outcome != "rejected" ||
		!strings.Contains(strings.Join(h[1].Problems, ";"), "pair.yaml: /values/left: minimum: got -1, want 0") || h[0].DelayMS < 10 {
		t.Fatalf("history %+v", h)
	}
	for i := 3; i < 8; i++ {
		if _, err := l.Offer(ctx, pairDoc(i), Options{Source: "test"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if h := l.History(); len(h) != 3 || h[2].Version != l.Current().Version() {
		t.Fatalf("history is not bounded to the newest 3: %+v", h)
	}
}

// Readers resolving while versions are swapped see whole versions only:
// both halves of the pair always match, and one version always carries
// one generation.
func TestReadersNeverSeeATornConfig(t *testing.T) {
	l := New(LiveOptions{Log: quiet})
	ctx := context.Background()
	if _, err := l.Offer(ctx, pairDoc(0), Options{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[string]int64{}
			for !stop.Load() {
				res := l.Resolve(Player{ID: "reader"})
				left, right := res.Int("pair.left", -1), res.Int("pair.right", -2)
				if left != right {
					errs <- fmt.Errorf("torn read: left %d right %d", left, right)
					return
				}
				if prev, ok := seen[res.Version()]; ok && prev != left {
					errs <- fmt.Errorf("version %s carried generations %d and %d", res.Version(), prev, left)
					return
				}
				seen[res.Version()] = left
				reads.Add(1)
			}
		}()
	}
	for n := 1; n <= 150; n++ {
		if _, err := l.Offer(ctx, pairDoc(n), Options{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reads.Load() == 0 {
		t.Fatal("no reads happened")
	}
	t.Logf("%d reads across 150 swaps", reads.Load())
}
