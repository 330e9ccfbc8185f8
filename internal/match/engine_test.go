package match

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a test clock moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recordingAllocator places matches on made-up rooms and remembers them; it
// can be told to fail.
type recordingAllocator struct {
	mu      sync.Mutex
	matches []*Match
	fail    int
}

func (a *recordingAllocator) Allocate(_ context.Context, m *Match) (*Assignment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail > 0 {
		a.fail--
		return nil, errors.New("no capacity")
	}
	a.matches = append(a.matches, m)
	return &Assignment{MatchID: m.ID, RoomID: "room-" + m.ID, Teams: m.Teams, Region: m.Region}, nil
}

type rig struct {
	e       *Engine
	clock   *clock
	alloc   *recordingAllocator
	mu      sync.Mutex
	updates map[string][]Update
}

func newRig(t *testing.T, rulesYAML string) *rig {
	t.Helper()
	rules := must(ParseRules([]byte(rulesYAML)))
	r := &rig{clock: &clock{now: time.Unix(1_700_000_000, 0)}, alloc: &recordingAllocator{}, updates: map[string][]Update{}}
	r.e = NewEngine(rules, NewMemoryPool(), r.alloc, Options{Now: r.clock.Now, Seed: 42, Notify: func(u Update) {
		r.mu.Lock()
		r.updates[u.TicketID] = append(r.updates[u.TicketID], u)
		r.mu.Unlock()
	}})
	return r
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (r *rig) submit(t *testing.T, id string, mu float64, mods ...func(*Ticket)) {
	t.Helper()
	tk := &Ticket{ID: id, Queue: "q", Players: []Player{{UserID: "u-" + id, Mu: mu, Sigma: 8}}}
	for _, m := range mods {
		m(tk)
	}
	if err := r.e.Submit(context.Background(), tk); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) pass(t *testing.T) int {
	t.Helper()
	n, err := r.e.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (r *rig) kinds(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, u := range r.updates[id] {
		out = append(out, u.Kind.String())
	}
	return strings.Join(out, ",")
}

const duelRules = `
queues:
  - name: q
    teams: 2
    team_size: 1
    rating:
      initial: 100
      widen:
        - {after: 5s, value: 200}
        - {after: 15s, value: 400}
    max_wait: 60s
`

// Two players 400 rating points apart are not matched at once, nor after
// the first widening step, and are matched once the window reaches 400.
func TestWideningMatchesAfterTheConfiguredStep(t *testing.T) {
	r := newRig(t, duelRules)
	r.submit(t, "a", 1000)
	r.submit(t, "b", 1400)
	if r.pass(t) != 0 {
		t.Fatal("matched at once, 400 apart with a 100 window")
	}
	r.clock.Add(5 * time.Second)
	if r.pass(t) != 0 {
		t.Fatal("matched with a 200 window")
	}
	r.clock.Add(10*time.Second - time.Millisecond)
	if r.pass(t) != 0 {
		t.Fatal("matched before 15 s")
	}
	r.clock.Add(time.Millisecond)
	if r.pass(t) != 1 {
		t.Fatal("not matched once the window reached 400")
	}
	if got := r.kinds("a"); got != "queued,widened,widened,matched" {
		t.Fatalf("updates of a: %s", got)
	}
	m := r.alloc.matches[0]
	if m.Spread != 400 || len(m.Teams) != 2 {
		t.Fatalf("match %+v", m)
	}
}

// Nearest ratings pair up: a tick never matches across when a closer
// partner exists.
func TestPairsNearestFirst(t *testing.T) {
	r := newRig(t, duelRules)
	for id, mu := range map[string]float64{"a": 1000, "b": 1510, "c": 1020, "d": 1500} {
		r.submit(t, id, mu)
	}
	if n := r.pass(t); n != 2 {
		t.Fatalf("%d matches", n)
	}
	var pairs []string
	for _, m := range r.alloc.matches {
		ids := []string{m.Tickets[0].ID, m.Tickets[1].ID}
		sort.Strings(ids)
		pairs = append(pairs, strings.Join(ids, ""))
	}
	sort.Strings(pairs)
	if strings.Join(pairs, " ") != "ac bd" {
		t.Fatalf("pairs %v", pairs)
	}
}

func TestExpiryAndCancel(t *testing.T) {
	r := newRig(t, duelRules)
	r.submit(t, "lonely", 1000)
	r.submit(t, "quitter", 3000)
	ok, err := r.e.Cancel(context.Background(), "quitter")
	if err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	if ok, _ := r.e.Cancel(context.Background(), "quitter"); ok {
		t.Fatal("cancelled twice")
	}
	r.clock.Add(60 * time.Second)
	r.pass(t)
	if got := r.kinds("lonely"); !strings.HasSuffix(got, "expired") {
		t.Fatalf("lonely: %s", got)
	}
	if got := r.kinds("quitter"); got != "queued,cancelled" {
		t.Fatalf("quitter: %s", got)
	}
	if keys, _ := r.e.pool.Keys(context.Background()); len(keys) != 0 {
		t.Fatalf("pool not empty: %v", keys)
	}
}

// A failed allocation puts the tickets back, first in line, and the next
// pass matches them.
func TestAllocationFailureRequeuesAtTheFront(t *testing.T) {
	r := newRig(t, duelRules)
	r.alloc.fail = 1
	r.submit(t, "a", 1000)
	r.clock.Add(time.Second)
	r.submit(t, "b", 1010)
	if r.pass(t) != 0 {
		t.Fatal("a failed allocation counted as a match")
	}
	oldest, _ := r.e.pool.Oldest(context.Background(), "q", 10)
	if len(oldest) != 2 || oldest[0].ID != "a" {
		t.Fatalf("requeued order: %v", oldest)
	}
	if r.pass(t) != 1 {
		t.Fatal("not matched after requeue")
	}
}

func TestTeamsBalanceParties(t *testing.T) {
	r := newRig(t, `
queues:
  - name: q
    teams: 2
    team_size: 3
    party: {min: 1, max: 3}
    rating: {initial: 500}
    max_wait: 60s
`)
	party := func(n int, mu float64) func(*Ticket) {
		return func(tk *Ticket) {
			tk.Players = nil
			for i := range n {
				tk.Players = append(tk.Players, Player{UserID: fmt.Sprintf("%s-%d", tk.ID, i), Mu: mu})
			}
		}
	}
	r.submit(t, "trio", 0, party(3, 1000))
	r.submit(t, "duo", 0, party(2, 1100))
	r.submit(t, "solo", 0, party(1, 900))
	if r.pass(t) != 1 {
		t.Fatal("no 3v3")
	}
	teams := r.alloc.matches[0].Teams
	if len(teams[0]) != 3 || len(teams[1]) != 3 {
		t.Fatalf("teams %v", teams)
	}
	for _, team := range teams {
		prefix := strings.Split(team[0], "-")[0]
		if prefix == "trio" {
			for _, u := range team {
				if !strings.HasPrefix(u, "trio") {
					t.Fatalf("party split: %v", teams)
				}
			}
		}
	}
}

func TestFreeForAllFillsThenStartsShort(t *testing.T) {
	r := newRig(t, `
queues:
  - name: q
    free_for_all: {min: 3, max: 5, fill_for: 5s}
    rating: {initial: 1000}
    max_wait: 60s
`)
	for i := range 4 {
		r.submit(t, fmt.Sprint(i), 1000+float64(i))
	}
	if r.pass(t) != 0 {
		t.Fatal("started short before fill_for")
	}
	r.clock.Add(5 * time.Second)
	if r.pass(t) != 1 || len(r.alloc.matches[0].Teams) != 4 {
		t.Fatalf("matches %v", r.alloc.matches)
	}
}

func TestLatencyNeedsACommonRegion(t *testing.T) {
	r := newRig(t, `
queues:
  - name: q
    teams: 2
    team_size: 1
    rating: {initial: 1000}
    latency_ms:
      initial: 60
      widen: [{after: 10s, value: 150}]
    max_wait: 60s
`)
	r.submit(t, "eu", 1000, func(tk *Ticket) { tk.Regions = map[string]uint32{"eu": 20, "us": 120} })
	r.submit(t, "us", 1000, func(tk *Ticket) { tk.Regions = map[string]uint32{"eu": 130, "us": 25} })
	if r.pass(t) != 0 {
		t.Fatal("matched without a region under 60 ms for both")
	}
	r.clock.Add(10 * time.Second)
	if r.pass(t) != 1 {
		t.Fatal("not matched at 150 ms")
	}
	if got := r.alloc.matches[0].Region; got != "us" { // worst 120 in us, 130 in eu
		t.Fatalf("region %q", got)
	}
}

// Tickets without latencies fit any region; one with latencies decides it.
func TestMissingLatenciesFitAnyRegion(t *testing.T) {
	r := newRig(t, `
queues:
  - name: q
    teams: 2
    team_size: 1
    rating: {initial: 100}
    latency_ms: {initial: 60}
    max_wait: 60s
`)
	r.submit(t, "none1", 1000)
	r.submit(t, "none2", 1000)
	r.submit(t, "far", 3000, func(tk *Ticket) { tk.Regions = map[string]uint32{"eu": 200} })
	if r.pass(t) != 1 {
		t.Fatal("tickets without latencies were not matched")
	}
	if got := r.kinds("far"); got != "queued" {
		t.Fatalf("a ticket over the limit everywhere: %s", got)
	}
}

func TestAdmission(t *testing.T) {
	r := newRig(t, `
queues:
  - name: q
    teams: 2
    team_size: 2
    party: {min: 1, max: 2}
    rating: {initial: 100}
    same: [mode]
    filters:
      - {attribute: level, min: 10}
      - {attribute: platform, must_not: [banned]}
    max_wait: 60s
`)
	ctx := context.Background()
	for name, tk := range map[string]*Ticket{
		"no queue":    {Queue: "nope", Players: []Player{{UserID: "x"}}},
		"party large": {Queue: "q", Players: []Player{{UserID: "a"}, {UserID: "b"}, {UserID: "c"}}, Strings: map[string]string{"mode": "m"}, Numbers: map[string]float64{"level": 20}},
		"low level":   {Queue: "q", Players: []Player{{UserID: "a"}}, Strings: map[string]string{"mode": "m"}, Numbers: map[string]float64{"level": 5}},
		"banned":      {Queue: "q", Players: []Player{{UserID: "a"}}, Strings: map[string]string{"mode": "m", "platform": "banned"}, Numbers: map[string]float64{"level": 20}},
		"no mode":     {Queue: "q", Players: []Player{{UserID: "a"}}, Numbers: map[string]float64{"level": 20}},
	} {
		if err := r.e.Submit(ctx, tk); !errors.Is(err, ErrInvalidTicket) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Different modes never meet.
	for i, mode := range []string{"ctf", "tdm", "ctf", "tdm"} {
		for j := range 2 {
			if err := r.e.Submit(ctx, &Ticket{ID: fmt.Sprintf("%s%d%d", mode, i, j), Queue: "q",
				Players: []Player{{UserID: fmt.Sprintf("%d%d", i, j), Mu: 1000}},
				Strings: map[string]string{"mode": mode}, Numbers: map[string]float64{"level": 20}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := r.pass(t); n != 2 {
		t.Fatalf("%d matches", n)
	}
	for _, m := range r.alloc.matches {
		mode := m.Tickets[0].Strings["mode"]
		for _, tk := range m.Tickets {
			if tk.Strings["mode"] != mode {
				t.Fatalf("modes mixed in %v", m.Teams)
			}
		}
	}
}

// Under random load every ticket lands in at most one match, and matches
// respect the window.
func TestNoTicketInTwoMatches(t *testing.T) {
	r := newRig(t, duelRules)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		for i := range 200 {
			r.submit(t, fmt.Sprintf("r%d-%d", round, i), 1500+rng.NormFloat64()*300)
		}
		r.clock.Add(time.Second)
		r.pass(t)
	}
	seen := map[string]string{}
	for _, m := range r.alloc.matches {
		if m.Spread > 400 {
			t.Fatalf("spread %v beyond the widest window", m.Spread)
		}
		for _, tk := range m.Tickets {
			if other, dup := seen[tk.ID]; dup {
				t.Fatalf("ticket %s in matches %s and %s", tk.ID, other, m.ID)
			}
			seen[tk.ID] = m.ID
		}
	}
	if len(seen) < 3000 {
		t.Fatalf("only %d of 4000 tickets matched", len(seen))
	}
}

func TestRulesErrorsNameQueueAndField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"queues: []", "no queues"},
		{"queues:\n- name: x\n  teams: 1\n  team_size: 1\n  rating: {initial: 1}\n  max_wait: 1s", `queue "x": teams`},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 1\n  rating: {initial: 0}\n  max_wait: 1s", `queue "x": rating.initial`},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 1\n  rating: {initial: 10, widen: [{after: 5s, value: 5}]}\n  max_wait: 1s", `queue "x": rating.widen[0].value`},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 1\n  rating: {initial: 10}\n  max_wait: soon", "not a duration"},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 1\n  rating: {initial: 10}\n  max_wait: 1s\n  colour: red", "colour"},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 2\n  party: {max: 3}\n  rating: {initial: 10}\n  max_wait: 1s", `queue "x": party`},
		{"queues:\n- name: x\n  teams: 2\n  team_size: 1\n  rating: {initial: 10}\n  max_wait: 1s\n  backfill: true", `queue "x": backfill`},
	} {
		_, err := ParseRules([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := ParseRules(DefaultRules); err != nil {
		t.Fatalf("default rules: %v", err)
	}
}

func BenchmarkPass(b *testing.B) {
	rules := must(ParseRules([]byte(duelRules)))
	pool := NewMemoryPool()
	e := NewEngine(rules, pool, &recordingAllocator{}, Options{Seed: 7})
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for range 1000 {
			_ = e.Submit(ctx, &Ticket{Queue: "q", Players: []Player{{UserID: "u", Mu: 1500 + rng.NormFloat64()*300}}})
		}
		if _, err := e.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(1000, "tickets/op")
}
