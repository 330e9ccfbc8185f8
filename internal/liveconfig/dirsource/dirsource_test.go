package dirsource

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rallyhq/rally/internal/liveconfig"
)

var quiet = slog.New(slog.DiscardHandler)

const schema = `{"type":"object","properties":{"gold":{"type":"integer","minimum":0}}}`

// replace writes a file the way editors save: a temporary file renamed
// over the original.
func replace(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits until cond holds of the live snapshot, or fails.
func waitFor(t *testing.T, l *liveconfig.Live, within time.Duration, what string, cond func(*liveconfig.Snapshot) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		changed := l.Changed()
		if cond(l.Current()) {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: not within %s; history %+v", what, within, l.History())
		}
	}
}

func gold(s *liveconfig.Snapshot) float64 {
	v, _ := s.Value("eco.gold")
	f, _ := v.(float64)
	return f
}

func start(t *testing.T, dir string) *liveconfig.Live {
	t.Helper()
	l := liveconfig.New(liveconfig.LiveOptions{Log: quiet})
	w, err := Start(context.Background(), l, Options{Dir: dir, Debounce: 20 * time.Millisecond, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func TestEditsGoLiveAndBrokenEditsDoNot(t *testing.T) {
	dir := t.TempDir()
	eco := filepath.Join(dir, "eco.yaml")
	replace(t, eco, "values:\n  gold: 1\n")
	replace(t, filepath.Join(dir, "eco.schema.json"), schema)
	l := start(t, dir)
	if gold(l.Current()) != 1 || l.Current().Source() != Source {
		t.Fatalf("initial load: gold %v source %q", gold(l.Current()), l.Current().Source())
	}

	// An editor's save (rename over the file).
	replace(t, eco, "values:\n  gold: 2\n")
	d := waitFor(t, l, time.Second, "renamed-over edit", func(s *liveconfig.Snapshot) bool { return gold(s) == 2 })
	t.Logf("rename edit live after %s", d)

	// A write in place.
	if err := os.WriteFile(eco, []byte("values:\n  gold: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, l, time.Second, "in-place edit", func(s *liveconfig.Snapshot) bool { return gold(s) == 3 })

	// A broken edit is refused whole; the last good version stays.
	good := l.Current()
	replace(t, eco, "values:\n  gold: -4\n")
	waitForHistory(t, l, "rejected")
	if l.Current() != good {
		t.Fatal("a broken edit replaced the live version")
	}
	last := l.History()[len(l.History())-1]
	if !strings.Contains(strings.Join(last.Problems, "\n"), "eco.yaml: /values/gold: minimum: got -4, want 0") {
		t.Fatalf("rejection does not say where and why: %+v", last)
	}

	// Fixed again, and a new subdirectory is watched too.
	replace(t, eco, "values:\n  gold: 5\n")
	if err := os.Mkdir(filepath.Join(dir, "pve"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, l, time.Second, "fix", func(s *liveconfig.Snapshot) bool { return gold(s) == 5 })
	replace(t, filepath.Join(dir, "pve", "boss.yaml"), "values:\n  hp: 900\n")
	waitFor(t, l, time.Second, "file in a new subdirectory", func(s *liveconfig.Snapshot) bool {
		v, ok := s.Value("pve.boss.hp")
		return ok && v == 900.0
	})

	// Removing a document removes its keys.
	if err := os.Remove(filepath.Join(dir, "pve", "boss.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, l, time.Second, "removal", func(s *liveconfig.Snapshot) bool { _, ok := s.Value("pve.boss.hp"); return !ok })
}

func waitForHistory(t *testing.T, l *liveconfig.Live, outcome string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if h := l.History(); len(h) > 0 && h[len(h)-1].Outcome == outcome {
			return
		}
		time.Sleep(5 * time.Millisecond) // polling a history with a deadline, not synchronising
	}
	t.Fatalf("no %s event; history %+v", outcome, l.History())
}

// A burst of writes becomes one reload of the final state, not one per
// write.
func TestLiveBurstIsDebounced(t *testing.T) {
	dir := t.TempDir()
	eco := filepath.Join(dir, "eco.yaml")
	replace(t, eco, "values:\n  gold: 0\n")
	l := start(t, dir)
	before := len(l.History())
	for i := 1; i <= 30; i++ {
		replace(t, eco, fmt.Sprintf("values:\n  gold: %d\n", i))
	}
	waitFor(t, l, 2*time.Second, "burst", func(s *liveconfig.Snapshot) bool { return gold(s) == 30 })
	if n := len(l.History()) - before; n > 3 {
		t.Fatalf("30 quick writes caused %d reloads", n)
	}
}

func TestLiveStartRefusesAnInvalidDirectory(t *testing.T) {
	dir := t.TempDir()
	replace(t, filepath.Join(dir, "eco.yaml"), "values:\n  gold: -1\n")
	replace(t, filepath.Join(dir, "eco.schema.json"), schema)
	l := liveconfig.New(liveconfig.LiveOptions{Log: quiet})
	_, err := Start(context.Background(), l, Options{Dir: dir, Log: quiet})
	if err == nil || !strings.Contains(err.Error(), "eco.yaml: /values/gold: minimum") {
		t.Fatalf("Start on an invalid directory: %v", err)
	}
	if _, err := Start(context.Background(), l, Options{Dir: filepath.Join(dir, "missing"), Log: quiet}); err == nil {
		t.Fatal("Start on a missing directory succeeded")
	}
}
