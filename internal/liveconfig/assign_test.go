package liveconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const players = 100000

func playerID(i int) string { return fmt.Sprintf("player-%06d", i) }

// splitDoc is an experiment with the given variants, in order.
func splitDoc(variants ...string) Files {
	var sb strings.Builder
	sb.WriteString("values:\n  reward: 1\nexperiments:\n  - id: split\n    variants:\n")
	for i := 0; i+1 < len(variants); i += 2 {
		fmt.Fprintf(&sb, "      - name: %s\n        weight: %s\n", variants[i], variants[i+1])
	}
	return Files{"game.yaml": []byte(sb.String())}
}

func assignAll(t testing.TB, s *Snapshot, exp string) []string { return assignN(s, exp, players) }

func assignN(s *Snapshot, exp string, n int) []string {
	out := make([]string, n)
	now := time.Now()
	for i := range out {
		r := s.Resolve(Player{ID: playerID(i)}, now)
		out[i], _ = r.Variant(exp)
	}
	return out
}

func share(assigned []string, variant string) float64 {
	n := 0
	for _, v := range assigned {
		if v == variant {
			n++
		}
	}
	return float64(n) * 100 / float64(len(assigned))
}

// 100k players split 10/90 within half a percentage point, and moving to
// 20/80 keeps every player of the first 10% where they were, whichever end
// of the list the growing variant sits at.
func TestExperimentSplitIsAccurateAndSticky(t *testing.T) {
	for _, order := range []string{"treatment first", "treatment last"} {
		t.Run(order, func(t *testing.T) {
			n, tolerance := players, 0.5
			if order == "treatment last" {
				n, tolerance = 20000, 1 // the 100k figure is above; this checks stickiness
			}
			doc := func(treat, control string) Files {
				if order == "treatment first" {
					return splitDoc("treatment", treat, "control", control)
				}
				return splitDoc("control", control, "treatment", treat)
			}
			before := assignN(mustBuild(t, doc("10", "90")), "split", n)
			got := share(before, "treatment")
			t.Logf("%d players, 10/90: treatment %.3f%%", n, got)
			if math.Abs(got-10) > tolerance || math.Abs(share(before, "control")-90) > tolerance {
				t.Fatalf("10/90 split gave treatment %.3f%%, control %.3f%%", got, share(before, "control"))
			}
			after := assignN(mustBuild(t, doc("20", "80")), "split", n)
			got = share(after, "treatment")
			t.Logf("%d players, 20/80: treatment %.3f%%", n, got)
			if math.Abs(got-20) > tolerance {
				t.Fatalf("20/80 split gave treatment %.3f%%", got)
			}
			moved := 0
			for i := range before {
				if before[i] == "treatment" && after[i] != "treatment" {
					t.Fatalf("%s left treatment when it grew", playerID(i))
				}
				if before[i] != after[i] {
					moved++
				}
			}
			// Exactly the players of the new 10% moved (control -> treatment).
			if pct := float64(moved) * 100 / float64(n); math.Abs(pct-10) > tolerance {
				t.Fatalf("%.3f%% of players changed variant, want about 10%%", pct)
			}
		})
	}
}

// The rollout is its own hash: raising it keeps everyone already in, and
// in the same variant.
func TestExperimentRolloutRampIsSticky(t *testing.T) {
	doc := func(rollout string) Files {
		return Files{"game.yaml": []byte(`
values: {reward: 1}
experiments:
  - id: ramped
    rollout: ` + rollout + `
    variants: [{name: a, weight: 50}, {name: b, weight: 50}]
`)}
	}
	low := assignN(mustBuild(t, doc("10")), "ramped", 20000)
	high := assignN(mustBuild(t, doc("30")), "ramped", 20000)
	in := func(vs []string) float64 { return 100 - share(vs, "") }
	if math.Abs(in(low)-10) > 1 || math.Abs(in(high)-30) > 1 {
		t.Fatalf("rollout 10%% -> %.2f%% in, 30%% -> %.2f%% in", in(low), in(high))
	}
	for i := range low {
		if low[i] != "" && high[i] != low[i] {
			t.Fatalf("%s was %q at 10%% and %q at 30%%", playerID(i), low[i], high[i])
		}
	}

	// A linear ramp, evaluated with an injected clock.
	s := mustBuild(t, Files{"game.yaml": []byte(`
values: {reward: 1}
releases:
  - id: ramp
    rollout: {from: 0, to: 100, start: 2026-01-01T00:00:00Z, end: 2026-01-11T00:00:00Z}
    values: {game.reward: 2}
`)})
	e := s.Experiment("ramp")
	day := func(d int) time.Time { return time.Date(2026, 1, 1+d, 0, 0, 0, 0, time.UTC) }
	for d, want := range map[int]int{-1: 0, 0: 0, 1: 1000, 5: 5000, 10: 10000, 20: 10000} {
		if got := e.RolloutAt(day(d)); got != want {
			t.Errorf("day %d: rollout %d buckets, want %d", d, got, want)
		}
	}
	if next := s.NextChange(day(5)); !next.After(day(5)) || next.After(day(5).Add(time.Hour)) {
		t.Errorf("during the ramp the next change is %s", next)
	}
	if next := s.NextChange(day(20)); !next.IsZero() {
		t.Errorf("after the ramp the next change is %s, want none", next)
	}
	wasIn := map[string]bool{}
	const rampPlayers = 5000
	for d := 2; d <= 10; d += 2 {
		n := 0
		for i := 0; i < rampPlayers; i++ {
			id := playerID(i)
			r := s.Resolve(Player{ID: id}, day(d))
			_, ok := r.Variant("ramp")
			if wasIn[id] && !ok {
				t.Fatalf("%s dropped out of the ramp on day %d", id, d)
			}
			if ok {
				wasIn[id] = true
				n++
				if r.Int("game.reward", 0) != 2 {
					t.Fatal("release values not applied")
				}
			}
		}
		if pct := float64(n) * 100 / rampPlayers; math.Abs(pct-float64(d)*10) > 2 {
			t.Errorf("day %d: %.2f%% in, want %d%%", d, pct, d*10)
		}
	}
}

// Experiments of one layer never share a player; each gets its slice.
func TestExperimentLayersAreMutuallyExclusive(t *testing.T) {
	s := mustBuild(t, Files{"game.yaml": []byte(`
values: {reward: 1, speed: 1}
experiments:
  - id: reward_test
    layer: economy
    layer_slice: [0, 30]
    variants: [{name: on, weight: 100, values: {game.reward: 2}}]
  - id: speed_test
    layer: economy
    layer_slice: [30, 100]
    variants: [{name: on, weight: 100, values: {game.speed: 2}}]
  - id: free
    variants: [{name: on, weight: 50}, {name: off, weight: 50}]
`)})
	counts := map[string]int{}
	const n = 20000
	for i := 0; i < n; i++ {
		r := s.Resolve(Player{ID: playerID(i)}, time.Now())
		_, a := r.Variant("reward_test")
		_, b := r.Variant("speed_test")
		if a && b {
			t.Fatalf("%s is in both experiments of the layer", playerID(i))
		}
		if a {
			counts["reward"]++
		}
		if b {
			counts["speed"]++
		}
		if v, _ := r.Variant("free"); v == "on" {
			counts["free_on"]++
			if a {
				counts["free_on_and_reward"]++
			}
		}
	}
	pct := func(c int) float64 { return float64(c) * 100 / n }
	if math.Abs(pct(counts["reward"])-30) > 1 || math.Abs(pct(counts["speed"])-70) > 1 {
		t.Fatalf("layer slices 30/70 gave %.2f/%.2f", pct(counts["reward"]), pct(counts["speed"]))
	}
	// Outside the layer assignment is independent: half of the reward
	// experiment's players are also in free=on.
	if got := float64(counts["free_on_and_reward"]) / float64(counts["reward"]); math.Abs(got-0.5) > 0.03 {
		t.Fatalf("independent experiment overlaps the layer by %.3f, want 0.5", got)
	}
}

func TestExperimentTargetingWindowAndForce(t *testing.T) {
	s := mustBuild(t, Files{"game.yaml": []byte(`
values: {reward: 1}
experiments:
  - id: targeted
    start: 2026-01-01T00:00:00Z
    end: 2026-02-01T00:00:00Z
    target:
      regions: [eu, NA]
      devices: [phone]
      cohorts: [beta, staff]
      exclude_cohorts: [banned]
      exclude_players: [p-excluded]
    force: {p-qa: b}
    variants: [{name: a, weight: 100}, {name: b, weight: 0}]
  - id: listed
    target: {players: [p-1, p-2]}
    variants: [{name: a, weight: 100}]
`)})
	in := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	ok := Player{ID: "p-1", Region: "na", Device: "Phone", Cohorts: []string{"x", "beta"}}
	cases := []struct {
		name string
		p    Player
		at   time.Time
		want string
	}{
		{"matches", ok, in, "a"},
		{"before start", ok, time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC), ""},
		{"at end", ok, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), ""},
		{"region", Player{ID: "p-1", Region: "asia", Device: "phone", Cohorts: []string{"beta"}}, in, ""},
		{"device", Player{ID: "p-1", Region: "eu", Device: "tablet", Cohorts: []string{"beta"}}, in, ""},
		{"no cohort", Player{ID: "p-1", Region: "eu", Device: "phone"}, in, ""},
		{"excluded cohort", Player{ID: "p-1", Region: "eu", Device: "phone", Cohorts: []string{"beta", "banned"}}, in, ""},
		{"excluded player", Player{ID: "p-excluded", Region: "eu", Device: "phone", Cohorts: []string{"beta"}}, in, ""},
		{"forced, outside everything", Player{ID: "p-qa"}, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), "b"},
		{"anonymous", Player{Region: "eu", Device: "phone", Cohorts: []string{"beta"}}, in, ""},
	}
	for _, c := range cases {
		v, _ := s.Resolve(c.p, c.at).Variant("targeted")
		if v != c.want {
			t.Errorf("%s: variant %q, want %q", c.name, v, c.want)
		}
	}
	for id, want := range map[string]bool{"p-1": true, "p-2": true, "p-3": false} {
		if _, got := s.Resolve(Player{ID: id}, in).Variant("listed"); got != want {
			t.Errorf("listed: %s in = %v", id, got)
		}
	}
	if next := s.NextChange(in); !next.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("next change %s, want the end", next)
	}
}

// digestPlayers is how many players the helper processes assign; the
// 100k-player comparison of two rally processes is in cmd/rally
// (TestLiveConfigExperimentAssignmentAcrossProcesses).
const digestPlayers = 30000

// assignmentDigest hashes the variant of every player of the 10/90 split.
func assignmentDigest(t testing.TB) string {
	s, err := Build(splitDoc("treatment", "10", "control", "90"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for i, v := range assignN(s, "split", digestPlayers) {
		fmt.Fprintf(h, "%s=%s\n", playerID(i), v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

const helperEnv = "LIVECONFIG_ASSIGNMENT_HELPER"

// TestExperimentAssignmentHelperProcess is not a test: run as a child process, it
// prints the digest of its assignments.
func TestExperimentAssignmentHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process only")
	}
	fmt.Printf("digest=%s pid=%d\n", assignmentDigest(t), os.Getpid())
}

// Two other OS processes assign the same players exactly as this one does:
// assignment depends on nothing but the ids.
func TestExperimentAssignmentIdenticalAcrossProcesses(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		t.Skip("in the helper")
	}
	// Both children run while this process computes its own digest.
	type result struct {
		out []byte
		err error
	}
	results := make([]chan result, 2)
	for i := range results {
		results[i] = make(chan result, 1)
		cmd := exec.Command(os.Args[0], "-test.run=^TestExperimentAssignmentHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		go func(ch chan result) {
			out, err := cmd.Output()
			ch <- result{out, err}
		}(results[i])
	}
	want := assignmentDigest(t)
	pids := map[string]bool{fmt.Sprint(os.Getpid()): true}
	for i, ch := range results {
		res := <-ch
		if res.err != nil {
			t.Fatalf("helper: %v\n%s", res.err, res.out)
		}
		var digest, pid string
		for _, f := range strings.Fields(string(res.out)) {
			if v, ok := strings.CutPrefix(f, "digest="); ok {
				digest = v
			}
			if v, ok := strings.CutPrefix(f, "pid="); ok {
				pid = v
			}
		}
		if digest != want {
			t.Fatalf("process %d digest %q, this process %q", i, digest, want)
		}
		if pid == "" || pids[pid] {
			t.Fatalf("helper pid %q is not a distinct process", pid)
		}
		pids[pid] = true
	}
	t.Logf("3 processes agree on the assignment of %d players: %s", digestPlayers, want[:16])
}

func BenchmarkResolve(b *testing.B) {
	files, err := ReadDir(examples)
	if err != nil {
		b.Fatal(err)
	}
	s, err := Build(files, Options{})
	if err != nil {
		b.Fatal(err)
	}
	p := Player{ID: "player-1", Region: "eu", Platform: "android", AppVersion: "1.5.0"}
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		_ = ToProto(s.Resolve(p, now), nil)
	}
}

func BenchmarkBucket(b *testing.B) {
	for b.Loop() {
		Bucket("variant", "split", "player-000123")
	}
}

func BenchmarkResolveSplit(b *testing.B) {
	s, _ := Build(splitDoc("treatment", "10", "control", "90"), Options{})
	now := time.Now()
	for b.Loop() {
		s.Resolve(Player{ID: "player-000123"}, now)
	}
}
