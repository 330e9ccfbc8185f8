package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rallyhq/rally/internal/testsvc"
)

// Both stores, in parallel: one server in memory, and two replicas sharing
// a throwaway redis-server and the first one's NATS.
func TestMatchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		matchEndToEnd(t, MatchOptions{Replicas: 1})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		matchEndToEnd(t, MatchOptions{Replicas: 2, RedisURL: testsvc.StartRedis(t).URL()})
	})
}

func matchEndToEnd(t *testing.T, o MatchOptions) {
	file := filepath.Join(t.TempDir(), "match.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o.Binary, o.Clients, o.Queue, o.Duration, o.Warmup = rallyBin, 40, "duel", 2*time.Second, 500*time.Millisecond
	o.ConnectConcurrency, o.GRPCConns, o.Seed, o.JSONFile = 8, 4, 7, file
	res, err := Match(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.WriteTable(&out)
	t.Log("\n" + out.String())

	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "queue", "clients", "players", "replicas", "store", "tickets_matched_per_sec",
		"time_to_match_ms", "rating_spread", "double_assignments", "errors", "expired", "cancelled", "unmatched",
		"server_cpu_cores", "server_rss_mb", "per_replica", "loadgen_cpu_cores", "setup_s", "at", "goos", "goarch", "cpus"} {
		if _, ok := j[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		if _, ok := j["time_to_match_ms"].(map[string]any)[k]; !ok {
			t.Errorf("time_to_match_ms lacks %q", k)
		}
	}
	for _, k := range []string{"p50", "p99"} {
		if _, ok := j["rating_spread"].(map[string]any)[k]; !ok {
			t.Errorf("rating_spread lacks %q", k)
		}
	}
	store := MatchStoreMemory
	if o.RedisURL != "" {
		store = MatchStoreRedis
	}
	if j["scenario"] != "match" || j["store"] != store || j["replicas"] != float64(o.Replicas) || j["clients"] != 40.0 {
		t.Errorf("scenario %v, store %v, replicas %v, clients %v", j["scenario"], j["store"], j["replicas"], j["clients"])
	}

	if res.TicketsMatched == 0 || res.TicketsMatchedPerSec <= 0 || res.Matches == 0 {
		t.Errorf("matched %d tickets (%v/s) in %d matches", res.TicketsMatched, res.TicketsMatchedPerSec, res.Matches)
	}
	if res.DoubleAssignments != 0 || res.Inconsistent != 0 {
		t.Errorf("double assignments %d, inconsistent %d: %v", res.DoubleAssignments, res.Inconsistent, res.DoubleSample)
	}
	if res.Errors != 0 {
		t.Errorf("errors %d: %v", res.Errors, res.ErrorSample)
	}
	if res.TimeToMatch.P50 <= 0 || res.TimeToMatch.P99 < res.TimeToMatch.P50 || res.TimeToMatch.Max < res.TimeToMatch.P99 {
		t.Errorf("time to match %+v", res.TimeToMatch)
	}
	// The duel queue starts at a window of 100 and widens only after 5 s.
	if res.RatingSpread.P99 > 100 {
		t.Errorf("rating spread %+v beyond the initial window", res.RatingSpread)
	}
	if res.ServerCPU <= 0 || res.ServerRSSMB <= 0 || res.MetricsError != "" || len(res.PerReplica) != o.Replicas {
		t.Errorf("server cpu %v, rss %v, metrics error %q, replicas %v", res.ServerCPU, res.ServerRSSMB, res.MetricsError, res.PerReplica)
	}
	for i, rep := range res.PerReplica {
		// Round robin: every replica serves streams and makes matches.
		if rep.CPU <= 0 || rep.Matches == 0 {
			t.Errorf("replica %d: %+v", i, rep)
		}
	}
	if o.RedisURL != "" && res.RedisCPU <= 0 {
		t.Errorf("redis cpu %v", res.RedisCPU)
	}
	if m := res.ServerCounter[`rally_match_matches_total{queue="duel"}`]; m == 0 {
		t.Errorf("servers counted no matches: %v", res.ServerCounter)
	}
}

func TestMatchPlayersAreSeededAndPlausible(t *testing.T) {
	ps := matchPlayers(2000, 42)
	again := matchPlayers(2000, 42)
	var sum float64
	homes := map[string]int{}
	for i, p := range ps {
		if p.mu != again[i].mu || len(p.regions) != len(again[i].regions) {
			t.Fatalf("player %d differs between runs with one seed", i)
		}
		if p.device != "bench-match-"+strconv.Itoa(i) {
			t.Fatalf("device %q", p.device)
		}
		if p.mu < 300 || p.mu > 2700 {
			t.Fatalf("mu %v outside [300, 2700]", p.mu)
		}
		sum += p.mu
		if n := len(p.regions); n < 3 || n > 5 {
			t.Fatalf("player %d measures %d regions", i, n)
		}
		home := 0
		for r, ms := range p.regions {
			switch {
			case ms >= 10 && ms <= 60:
				home++
				homes[r]++
			case ms < 80 || ms > 250:
				t.Fatalf("player %d: %s at %d ms", i, r, ms)
			}
		}
		if home != 1 {
			t.Fatalf("player %d has %d home regions: %v", i, home, p.regions)
		}
	}
	if mean := sum / float64(len(ps)); math.Abs(mean-1500) > 30 {
		t.Errorf("mean mu %.0f", mean)
	}
	if len(homes) != len(matchRegions) || homes["eu"] < homes["sa"] {
		t.Errorf("home regions %v", homes)
	}
	if other := matchPlayers(10, 43); other[0].mu == ps[0].mu {
		t.Error("another seed gave the same players")
	}
}

func TestCheckAssignments(t *testing.T) {
	users := map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}
	mus := []float64{1500, 1550, 1400, 1800}
	mu := func(p int) float64 { return mus[p] }
	matched := func(id string, p int32, sent, ended int64, match string, players ...string) ticketRec {
		return ticketRec{id: id, player: p, out: outMatched, sent: sent, ended: ended, match: match, users: players}
	}
	clean := []ticketRec{
		matched("t1", 0, 10, 20, "m1", "a", "b"),
		matched("t2", 1, 11, 21, "m1", "a", "b"),
		matched("t3", 0, 22, 30, "m2", "a", "c"),
		matched("t4", 2, 12, 31, "m2", "a", "c"),
		{id: "t5", player: 3, out: outOpen, sent: 5},
	}
	got := checkAssignments(clean, users, mu, 0, 100)
	if got.doubles != 0 || got.inconsistent != 0 || got.matches != 2 {
		t.Fatalf("clean run: %+v", got)
	}
	if len(got.spreads) != 2 || got.spreads[0] != 50 || got.spreads[1] != 100 {
		t.Fatalf("spreads %v", got.spreads)
	}
	if got := checkAssignments(clean, users, mu, 25, 100); got.matches != 1 {
		t.Fatalf("window: %+v", got)
	}

	cases := map[string]struct {
		recs                  []ticketRec
		doubles, inconsistent int64
	}{
		"ticket in two matches": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			matched("t2", 1, 11, 21, "m1", "a", "b"),
			{id: "t1", player: 0, out: outMatched, sent: 10, ended: 22, match: "m9", users: []string{"a", "c"}, again: true},
			matched("t4", 2, 12, 23, "m9", "a", "c"),
		}, doubles: 1},
		"player in a match its ticket was not": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			matched("t2", 1, 11, 21, "m1", "a", "b"),
			matched("t3", 2, 12, 21, "m2", "b", "c"),
		}, doubles: 1}, // b's open ticket t2 was matched into m1
		"player without an open ticket": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			matched("t2", 1, 11, 21, "m1", "a", "b"),
			matched("t3", 2, 30, 40, "m2", "a", "c"),
		}, doubles: 1},
		"teams differ": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			matched("t2", 1, 11, 21, "m1", "b", "c"),
		}, doubles: 1},
		"expired yet matched": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			{id: "t2", player: 1, out: outExpired, sent: 11, ended: 25},
		}, inconsistent: 1},
		"stream error: unknown, not counted": {recs: []ticketRec{
			matched("t1", 0, 10, 20, "m1", "a", "b"),
			{id: "t2", player: 1, out: outError, sent: 11, ended: 25},
		}},
	}
	for name, c := range cases {
		got := checkAssignments(c.recs, users, mu, 0, 100)
		if got.doubles != c.doubles || got.inconsistent != c.inconsistent {
			t.Errorf("%s: doubles %d inconsistent %d, want %d %d (%v)", name, got.doubles, got.inconsistent, c.doubles, c.inconsistent, got.samples)
		}
	}
}

func TestPacerSpacesTickets(t *testing.T) {
	p := newPacer(1000) // one per ms, a tenth of a second saved up at most
	now := time.Unix(100, 0)
	first := p.reserve(now)
	if !first.Equal(now.Add(-100 * time.Millisecond)) {
		t.Fatalf("first slot %v", first.Sub(now))
	}
	var last time.Time
	for range 300 {
		last = p.reserve(now)
	}
	if d := last.Sub(now); d != 200*time.Millisecond {
		t.Fatalf("301st slot at %v, want 200ms", d)
	}
	// Idle time refills no more than the burst.
	later := now.Add(time.Hour)
	if got := p.reserve(later); !got.Equal(later.Add(-100 * time.Millisecond)) {
		t.Fatalf("after idling: %v", got.Sub(later))
	}
}

func TestMatchOptionsValidate(t *testing.T) {
	for name, o := range map[string]MatchOptions{
		"fewer players than clients": {Binary: "x", Clients: 10, Players: 5, Duration: time.Second},
		"replicas without redis":     {Binary: "x", Clients: 10, Replicas: 2, Duration: time.Second},
		"target without grpc":        {Target: "127.0.0.1:1", Clients: 10, Duration: time.Second},
		"bad redis url":              {Binary: "x", Clients: 10, Duration: time.Second, RedisURL: "127.0.0.1:6379"},
	} {
		if err := o.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	o := MatchOptions{Target: "127.0.0.1:1,127.0.0.1:2", GRPCTarget: "127.0.0.1:3, 127.0.0.1:4", Clients: 10, Duration: time.Second}
	if err := o.validate(); err != nil || o.Replicas != 2 || o.Players != 10 || o.Queue != "duel" {
		t.Fatalf("%v: %+v", err, o)
	}
}

func TestLastLogLine(t *testing.T) {
	log := `{"level":"INFO","msg":"starting"}
{"level":"ERROR","msg":"store","err":"boom"}
{"level":"INFO","msg":"stopped"}
rally: match.store: redis is not available in this build yet`
	if got := lastLogLine(log); got != "rally: match.store: redis is not available in this build yet" {
		t.Fatalf("got %q", got)
	}
	if got := lastLogLine(`{"level":"INFO","msg":"a"}` + "\n" + `{"level":"ERROR","msg":"b"}` + "\n" + `{"level":"INFO","msg":"c"}`); got != `{"level":"ERROR","msg":"b"}` {
		t.Fatalf("got %q", got)
	}
}
