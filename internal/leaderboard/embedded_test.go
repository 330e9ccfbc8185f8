package leaderboard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rallyhq/rally/internal/store"
)

func openStore(t *testing.T, path string) *store.Bolt {
	t.Helper()
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A restart reloads every record with its order: ties keep who got there
// first, and the period's sequence continues after the restart.
func TestLeaderboardEmbeddedSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rally.db")
	st := openStore(t, path)
	be := NewEmbedded(st, EmbeddedOptions{})
	svc := newService(t, be, nil)
	mustBoard(t, svc, Board{ID: "r", Operator: OpSet})
	for _, o := range []string{"first", "second", "third"} {
		submit(t, svc, "r", o, 50, 0, 0)
	}
	submit(t, svc, "r", "top", 99, 0, 0)
	if _, err := svc.Delete(ctx, "r", "", "third"); err != nil {
		t.Fatal(err)
	}
	_ = be.Close()
	_ = st.Close()

	st = openStore(t, path)
	defer st.Close()
	be = NewEmbedded(st, EmbeddedOptions{})
	defer be.Close()
	svc = newService(t, be, nil)
	if got := order(t, svc, "r", ""); !slices.Equal(got, []string{"top", "first", "second"}) {
		t.Fatalf("after restart: %v", got)
	}
	if r := submit(t, svc, "r", "late", 50, 0, 0); r.Record.Rank != 4 {
		t.Fatalf("a tie reached after the restart ranks %d, want 4", r.Record.Rank)
	}
}

// Acknowledged writes survive kill -9: a child process submits from
// several goroutines and prints each acknowledgement; the parent kills it
// mid-stream and checks every acknowledged score is in the store.
func TestLeaderboardEmbeddedAcknowledgedWritesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeaderboardEmbeddedKill9Child$")
	cmd.Env = append(os.Environ(), "RALLY_TEST_LEADERBOARD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]int64{}
	sc := bufio.NewScanner(out)
	n := 0
	deadline := time.Now().Add(20 * time.Second)
	for n < 400 && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		v, _ := strconv.ParseInt(f[2], 10, 64)
		acked[f[1]] = max(acked[f[1]], v)
		n++
		if time.Now().After(deadline) {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred close, no flush
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if n < 400 {
		t.Fatalf("child acknowledged only %d writes", n)
	}

	st := openStore(t, filepath.Join(dir, "rally.db"))
	defer st.Close()
	be := NewEmbedded(st, EmbeddedOptions{})
	defer be.Close()
	svc := newService(t, be, nil)
	for owner, score := range acked {
		r, _, err := svc.Rank(context.Background(), "crash", "", owner)
		if err != nil || r.Score < score {
			t.Fatalf("%s: acknowledged %d, stored %+v (%v)", owner, score, r, err)
		}
	}
}

// TestLeaderboardEmbeddedKill9Child is the child of the test above; it does nothing
// in a normal run.
func TestLeaderboardEmbeddedKill9Child(t *testing.T) {
	dir := os.Getenv("RALLY_TEST_LEADERBOARD_DIR")
	if dir == "" {
		t.Skip("runs as the child of TestLeaderboardEmbeddedAcknowledgedWritesSurviveKill9")
	}
	st := openStore(t, filepath.Join(dir, "rally.db"))
	svc := newService(t, NewEmbedded(st, EmbeddedOptions{}), nil)
	mustBoard(t, svc, Board{ID: "crash", Operator: OpSet})
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	stop := time.Now().Add(30 * time.Second) // the parent kills us long before
	for g := range 8 {
		wg.Go(func() {
			owner := fmt.Sprint("g", g)
			for score := int64(1); time.Now().Before(stop); score++ {
				if _, err := svc.Submit(context.Background(), "crash", Write{Owner: owner, Score: score}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s %d\n", owner, score)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// flakyStore is the real bbolt store with writes that can be made to fail,
// as a full disk would.
type flakyStore struct {
	*store.Bolt
	fail atomic.Bool
}

func (f *flakyStore) PutMany(ctx context.Context, bucket string, kvs map[string][]byte) error {
	if f.fail.Load() {
		return errors.New("no space left on device")
	}
	return f.Bolt.PutMany(ctx, bucket, kvs)
}

// A failed commit fails its writers, and memory, which had applied the
// writes, is reloaded from the store: nothing unacknowledged is served.
func TestLeaderboardEmbeddedFailedCommitIsNotServed(t *testing.T) {
	ctx := context.Background()
	fs := &flakyStore{Bolt: openStore(t, filepath.Join(t.TempDir(), "rally.db"))}
	defer fs.Close()
	reg := prometheus.NewRegistry()
	be := NewEmbedded(fs, EmbeddedOptions{Registerer: reg})
	defer be.Close()
	svc := newService(t, be, nil)
	mustBoard(t, svc, Board{ID: "f", Operator: OpSet})
	submit(t, svc, "f", "a", 10, 0, 0)
	fs.fail.Store(true)
	if _, err := svc.Submit(ctx, "f", Write{Owner: "a", Score: 20}); err == nil {
		t.Fatal("submit succeeded on a failing store")
	}
	if _, err := svc.Submit(ctx, "f", Write{Owner: "b", Score: 5}); err == nil {
		t.Fatal("submit succeeded on a failing store")
	}
	fs.fail.Store(false)
	if r, _, err := svc.Rank(ctx, "f", "", "a"); err != nil || r.Score != 10 {
		t.Fatalf("a after failed commit: %+v %v", r, err)
	}
	if _, _, err := svc.Rank(ctx, "f", "", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b after failed commit: %v", err)
	}
	if n := testutil.ToFloat64(be.m.commitErrors); n != 2 {
		t.Fatalf("commit errors counted %v", n)
	}
	if r := submit(t, svc, "f", "b", 5, 0, 0); r.Record.Rank != 2 {
		t.Fatalf("after recovery: %+v", r.Record)
	}
}

// Concurrent writers share transactions: fewer commits than writes.
func TestLeaderboardEmbeddedGroupCommit(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := openStore(t, filepath.Join(t.TempDir(), "rally.db"))
	defer st.Close()
	be := NewEmbedded(st, EmbeddedOptions{Registerer: reg})
	defer be.Close()
	svc := newService(t, be, nil)
	mustBoard(t, svc, Board{ID: "g", Operator: OpIncr})
	var wg sync.WaitGroup
	const writers, each = 32, 20
	for g := range writers {
		wg.Go(func() {
			for range each {
				if _, err := svc.Submit(context.Background(), "g", Write{Owner: fmt.Sprint("p", g%8), Score: 1}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var total int64
	for g := range 8 {
		r, _, err := svc.Rank(context.Background(), "g", "", fmt.Sprint("p", g))
		if err != nil {
			t.Fatal(err)
		}
		total += r.Score
	}
	if total != writers*each {
		t.Fatalf("increments lost: %d of %d", total, writers*each)
	}
	n := histogramCount(t, reg, "rally_leaderboard_commit_batch_size")
	if n == 0 || n >= writers*each {
		t.Fatalf("%d commits for %d writes: no grouping", n, writers*each)
	}
	t.Logf("%d writes in %d commits", writers*each, n)
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
