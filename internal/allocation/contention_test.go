package allocation

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
	"github.com/rallyhq/rally/internal/allocation/allocclient"
	"github.com/rallyhq/rally/internal/match"
)

// The contention test's size; docs/benchmarks.md reproduces the published
// figure with these flags (go test ... -args -alloc.servers=...).
var (
	flagServers  = flag.Int("alloc.servers", 200, "Ready game servers in TestConcurrentAllocatorsNeverHandOutTwice")
	flagWorkers  = flag.Int("alloc.workers", 20, "concurrent allocating clients")
	flagReplicas = flag.Int("alloc.replicas", 2, "allocator replicas (each with its own informer and gRPC server) the clients are spread over")
)

// Acceptance: 20 concurrent allocators over gRPC, spread over two allocator
// replicas, against 200 Ready servers: 200 successes, no server twice,
// checked by reading every pod back from the API server; then nothing is
// left. Logs allocations/s, latency percentiles and conflicts (run with -v).
func TestConcurrentAllocatorsNeverHandOutTwice(t *testing.T) {
	n, workers, replicas := *flagServers, *flagWorkers, *flagReplicas
	k := newKube(t)
	k.create(t, n, server{set: "arena", version: "1.0"})
	reps := make([]*replica, replicas)
	for i := range reps {
		reps[i] = k.startReplica(t, Options{})
		reps[i].waitReady(t, n)
	}

	type win struct {
		name, id string
		took     time.Duration
	}
	var (
		mu   sync.Mutex
		wins []win
		last time.Time
		seq  atomic.Int64
		wg   sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	for w := range workers {
		cl := allocclient.NewClient(reps[w%replicas].conn, "")
		wg.Go(func() {
			for {
				id := fmt.Sprintf("w%d-%d", w, seq.Add(1))
				t0 := time.Now()
				resp, err := cl.Allocate(ctx, &allocationv1.AllocateRequest{Set: "arena", Metadata: map[string]string{"match_id": id}})
				if errors.Is(err, ErrNoServer) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				done := time.Now()
				mu.Lock()
				wins = append(wins, win{resp.GetName(), id, done.Sub(t0)})
				if done.After(last) {
					last = done
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := last.Sub(start)

	if len(wins) != n {
		t.Fatalf("%d successful allocations, want %d", len(wins), n)
	}
	byName := map[string]string{}
	for _, w := range wins {
		if prev, dup := byName[w.name]; dup {
			t.Fatalf("%s handed out twice (%s and %s)", w.name, prev, w.id)
		}
		byName[w.name] = w.id
	}
	pods, err := k.cs.CoreV1().Pods(k.ns).List(context.Background(), metav1.ListOptions{LabelSelector: gamev1.LabelSet + "=arena"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != n {
		t.Fatalf("%d pods read back", len(pods.Items))
	}
	for _, p := range pods.Items {
		var meta map[string]string
		json.Unmarshal([]byte(p.Annotations[gamev1.AnnotationAllocation]), &meta)
		if p.Labels[gamev1.LabelState] != "Allocated" || meta["match_id"] != byName[p.Name] {
			t.Fatalf("%s: state %s, allocated to %q, but the answer went to %q", p.Name, p.Labels[gamev1.LabelState], meta["match_id"], byName[p.Name])
		}
	}
	for _, r := range reps {
		if _, err := r.a.Allocate(context.Background(), &allocationv1.AllocateRequest{}); !errors.Is(err, ErrNoServer) {
			t.Fatalf("allocation after all were taken: %v", err)
		}
	}

	conflicts := 0.0
	for _, r := range reps {
		conflicts += counter(r.a.m.conflicts)
	}
	lat := make([]time.Duration, len(wins))
	for i, w := range wins {
		lat[i] = w.took
	}
	slices.Sort(lat)
	t.Logf("%d allocations by %d clients over %d replicas in %v: %.0f allocations/s; latency p50 %v p99 %v max %v; %v conflicts (%.2f per allocation)",
		n, workers, replicas, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
		pct(lat, 50), pct(lat, 99), lat[len(lat)-1], conflicts, conflicts/float64(n))
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(0, min(len(sorted)-1, i-1))].Round(10 * time.Microsecond)
}

// BenchmarkAllocate measures allocations over gRPC against the real API
// server, 20 concurrent clients on one replica (b.N Ready servers are made
// first). Use a fixed count: -benchtime=1000x.
func BenchmarkAllocate(b *testing.B) {
	k := newKube(b)
	k.create(b, b.N, server{set: "arena", version: "1.0"})
	r := k.startReplica(b, Options{})
	r.waitReady(b, b.N)
	cl := allocclient.NewClient(r.conn, "")
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	b.SetParallelism(max(1, 20/max(1, runtime.GOMAXPROCS(0))))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if _, err := cl.Allocate(context.Background(), &allocationv1.AllocateRequest{Set: "arena"}); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
		b.ReportMetric(float64(pct(lat, 50).Microseconds()), "p50-µs")
		b.ReportMetric(float64(pct(lat, 99).Microseconds()), "p99-µs")
		b.ReportMetric(counter(r.a.m.conflicts)/float64(b.N), "conflicts/op")
	}
}

// The matchmaker's allocator: a match is placed on a Ready game server and
// its tickets' assignment carries the server's address and game port; the
// server's pod carries the match. With no server left, the next match is
// not made and its tickets wait.
func TestMatchAllocatorPlacesAMatchOnAGameServer(t *testing.T) {
	k := newKube(t)
	names := k.create(t, 1, server{set: "arena", version: "1.0", ip: "10.0.0.9"})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 1)
	rules, err := match.ParseRules([]byte(`
queues:
  - name: duel
    teams: 2
    team_size: 1
    rating: {initial: 1000}
    max_wait: 60s
`))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	matched := map[string]*match.Assignment{}
	alloc := &allocclient.MatchAllocator{Allocator: allocclient.NewClient(r.conn, ""), Namespace: k.ns, Set: "arena", Port: "game"}
	e := match.NewEngine(rules, match.NewMemoryPool(), alloc, match.Options{Log: quiet, Notify: func(u match.Update) {
		if u.Kind == match.Matched {
			mu.Lock()
			matched[u.TicketID] = u.Assignment
			mu.Unlock()
		}
	}})
	ctx := context.Background()
	for _, id := range []string{"ann", "bob"} {
		if err := e.Submit(ctx, &match.Ticket{ID: id, Queue: "duel", Players: []match.Player{{UserID: id, Mu: 1500, Sigma: 8}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("pass made %d matches: %v", n, err)
	}
	mu.Lock()
	asg := matched["ann"]
	same := matched["bob"] == asg
	mu.Unlock()
	want := names[0] + ".arena." + k.ns + ".svc:7777"
	if asg == nil || !same || asg.Connection != want || asg.RoomID != k.ns+"/"+names[0] {
		t.Fatalf("assignment %+v (same for both: %v), want connection %s", asg, same, want)
	}
	pod := k.pod(t, names[0])
	var meta map[string]string
	json.Unmarshal([]byte(pod.Annotations[gamev1.AnnotationAllocation]), &meta)
	var teams [][]string
	json.Unmarshal([]byte(meta["teams"]), &teams)
	if pod.Labels[gamev1.LabelState] != "Allocated" || meta["match_id"] != asg.MatchID || meta["queue"] != "duel" || len(teams) != 2 {
		t.Fatalf("server's pod: %v %v", pod.Labels, pod.Annotations)
	}

	for _, id := range []string{"cat", "dan"} {
		if err := e.Submit(ctx, &match.Ticket{ID: id, Queue: "duel", Players: []match.Player{{UserID: id, Mu: 1500, Sigma: 8}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("with no server left the pass made %d matches: %v", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if matched["cat"] != nil || matched["dan"] != nil {
		t.Fatal("tickets matched without a server")
	}
}
