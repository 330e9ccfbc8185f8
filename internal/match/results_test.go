package match

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rallyhq/rally/internal/store"
)

func newTestResults(t *testing.T) (*Results, *prometheus.Registry) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "rally.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	r := NewResults(NewStoreRatings(st), NewResultTokens([]byte("a test signing key of 32 bytes..")), reg, nil)
	t.Cleanup(func() { r.Close(context.Background()) })
	return r, reg
}

var duelTeams = [][]string{{"alice"}, {"bob"}}

func aliceWins() []Placement {
	return []Placement{{UserIDs: []string{"alice"}, Rank: 0}, {UserIDs: []string{"bob"}, Rank: 1}}
}

func bobWins() []Placement {
	return []Placement{{UserIDs: []string{"bob"}, Rank: 0}, {UserIDs: []string{"alice"}, Rank: 1}}
}

func record(t *testing.T, r *Results, id string, teams [][]string, rules ResultRules) {
	t.Helper()
	if err := r.RecordMatch(context.Background(), id, teams, rules); err != nil {
		t.Fatal(err)
	}
}

func ratingsOf(t *testing.T, r *Results, users ...string) map[string]float64 {
	t.Helper()
	got, err := r.Ratings.Get(context.Background(), users)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for u, v := range got {
		out[u] = v.Mu
	}
	return out
}

// One player's report alone moves nobody's rating; the match is rated once
// the other team reports the same result.
func TestResultNeedsEveryTeamToAgree(t *testing.T) {
	r, reg := newTestResults(t)
	ctx := context.Background()
	record(t, r, "m1", duelTeams, ResultRules{})

	out, rated, err := r.Report(ctx, "m1", "alice", aliceWins())
	if err != nil || out != Pending || rated != nil {
		t.Fatalf("first report: %v %v %v", out, rated, err)
	}
	if mu := ratingsOf(t, r, "alice", "bob"); mu["alice"] != 1500 || mu["bob"] != 1500 {
		t.Fatalf("one report moved ratings: %v", mu)
	}
	// The same report again is harmless; a changed one from the same team is refused.
	if out, _, err := r.Report(ctx, "m1", "alice", aliceWins()); err != nil || out != Pending {
		t.Fatalf("repeated report: %v %v", out, err)
	}
	if _, _, err := r.Report(ctx, "m1", "alice", bobWins()); !errors.Is(err, ErrAlreadyReported) {
		t.Fatalf("changed report: %v", err)
	}
	out, rated, err = r.Report(ctx, "m1", "bob", aliceWins())
	if err != nil || out != Rated {
		t.Fatalf("agreeing report: %v %v", out, err)
	}
	if rated["alice"].Mu <= 1500 || rated["bob"].Mu >= 1500 {
		t.Fatalf("ratings: %v", rated)
	}
	if mu := ratingsOf(t, r, "alice", "bob"); mu["alice"] != rated["alice"].Mu {
		t.Fatalf("stored %v, answered %v", mu, rated)
	}
	if _, _, err := r.Report(ctx, "m1", "bob", aliceWins()); !errors.Is(err, ErrMatchNotFound) {
		t.Fatalf("a result counted twice: %v", err)
	}
	if got := testutil.ToFloat64(r.outcomes.WithLabelValues("rated_agreed")); got != 1 {
		t.Fatalf("rated_agreed = %v", got)
	}
	_ = reg
}

// Conflicting reports rate nobody, are kept for operators and counted;
// later reports are refused.
func TestConflictingResultsRateNobody(t *testing.T) {
	r, _ := newTestResults(t)
	ctx := context.Background()
	record(t, r, "m2", duelTeams, ResultRules{})
	if out, _, err := r.Report(ctx, "m2", "alice", aliceWins()); err != nil || out != Pending {
		t.Fatal(out, err)
	}
	out, rated, err := r.Report(ctx, "m2", "bob", bobWins())
	if err != nil || out != Disputed || rated != nil {
		t.Fatalf("conflicting report: %v %v %v", out, rated, err)
	}
	if mu := ratingsOf(t, r, "alice", "bob"); mu["alice"] != 1500 || mu["bob"] != 1500 {
		t.Fatalf("a dispute moved ratings: %v", mu)
	}
	if _, _, err := r.Report(ctx, "m2", "alice", aliceWins()); !errors.Is(err, ErrDisputed) {
		t.Fatalf("report after a dispute: %v", err)
	}
	teams, reports, err := r.Dispute(ctx, "m2")
	if err != nil || len(teams) != 2 || len(reports) != 2 || reports["alice"][0] != 0 || reports["bob"][0] != 1 {
		t.Fatalf("stored dispute: %v %v %v", teams, reports, err)
	}
	if got := testutil.ToFloat64(r.outcomes.WithLabelValues("disputed")); got != 1 {
		t.Fatalf("disputed = %v", got)
	}
	// The host can still settle a disputed match.
	rated, err = r.Settle(ctx, "m2", bobWins())
	if err != nil || rated["bob"].Mu <= 1500 {
		t.Fatalf("settle after dispute: %v %v", rated, err)
	}
}

// A queue whose results come from the game server refuses player reports;
// the host's report counts at once.
func TestServerReportedQueue(t *testing.T) {
	r, _ := newTestResults(t)
	ctx := context.Background()
	record(t, r, "m3", duelTeams, ResultRules{Reporter: "server"})
	if _, _, err := r.Report(ctx, "m3", "alice", aliceWins()); !errors.Is(err, ErrServerReports) {
		t.Fatalf("player report on a server queue: %v", err)
	}
	rated, err := r.Settle(ctx, "m3", aliceWins())
	if err != nil || rated["alice"].Mu <= 1500 {
		t.Fatalf("settle: %v %v", rated, err)
	}
	if _, err := r.Settle(ctx, "m3", aliceWins()); !errors.Is(err, ErrMatchNotFound) {
		t.Fatalf("settled twice: %v", err)
	}
}

// A stranger's report looks exactly like one for an unknown match, and
// malformed results are refused before anything is recorded.
func TestResultReportsAreChecked(t *testing.T) {
	r, _ := newTestResults(t)
	ctx := context.Background()
	record(t, r, "m4", [][]string{{"a1", "a2"}, {"b1", "b2"}}, ResultRules{})
	if _, _, err := r.Report(ctx, "m4", "mallory", nil); !errors.Is(err, ErrMatchNotFound) {
		t.Fatalf("stranger: %v", err)
	}
	if _, _, err := r.Report(ctx, "nope", "a1", nil); !errors.Is(err, ErrMatchNotFound) {
		t.Fatalf("unknown match: %v", err)
	}
	for name, res := range map[string][]Placement{
		"missing player":   {{UserIDs: []string{"a1", "a2"}, Rank: 0}, {UserIDs: []string{"b1"}, Rank: 1}},
		"listed twice":     {{UserIDs: []string{"a1", "a2", "a1"}, Rank: 0}, {UserIDs: []string{"b1", "b2"}, Rank: 1}},
		"outsider":         {{UserIDs: []string{"a1", "a2", "mallory"}, Rank: 0}, {UserIDs: []string{"b1", "b2"}, Rank: 1}},
		"team split":       {{UserIDs: []string{"a1", "b1"}, Rank: 0}, {UserIDs: []string{"a2", "b2"}, Rank: 1}},
		"negative rank":    {{UserIDs: []string{"a1", "a2"}, Rank: -1}, {UserIDs: []string{"b1", "b2"}, Rank: 1}},
		"nothing reported": nil,
	} {
		if _, _, err := r.Report(ctx, "m4", "a1", res); !errors.Is(err, ErrBadResult) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Ranks compare by order: 0/1 from one team and 3/7 from the other agree.
	if out, _, err := r.Report(ctx, "m4", "a1", []Placement{{UserIDs: []string{"a1", "a2"}, Rank: 0}, {UserIDs: []string{"b1", "b2"}, Rank: 1}}); err != nil || out != Pending {
		t.Fatal(out, err)
	}
	if out, _, err := r.Report(ctx, "m4", "b2", []Placement{{UserIDs: []string{"b2"}, Rank: 7}, {UserIDs: []string{"a2", "a1"}, Rank: 3}, {UserIDs: []string{"b1"}, Rank: 7}}); err != nil || out != Rated {
		t.Fatal(out, err)
	}
}

// At the deadline a match that not every team reported is void by default,
// or rated by the reports in with on_timeout: reported.
func TestResultDeadline(t *testing.T) {
	r, _ := newTestResults(t)
	ctx := context.Background()
	record(t, r, "void", duelTeams, ResultRules{Deadline: Duration(20 * time.Millisecond)})
	record(t, r, "reported", [][]string{{"carol"}, {"dave"}}, ResultRules{Deadline: Duration(20 * time.Millisecond), OnTimeout: "reported"})
	if _, _, err := r.Report(ctx, "void", "alice", aliceWins()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Report(ctx, "reported", "carol", []Placement{{UserIDs: []string{"carol"}}, {UserIDs: []string{"dave"}, Rank: 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(r.outcomes.WithLabelValues("void_timeout")) < 1 || testutil.ToFloat64(r.outcomes.WithLabelValues("rated_timeout")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("deadlines did not decide the matches")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu := ratingsOf(t, r, "alice", "bob", "carol", "dave")
	if mu["alice"] != 1500 || mu["bob"] != 1500 {
		t.Fatalf("a void match moved ratings: %v", mu)
	}
	if mu["carol"] <= 1500 || mu["dave"] >= 1500 {
		t.Fatalf("on_timeout reported did not rate: %v", mu)
	}
	if _, _, err := r.Report(ctx, "void", "bob", aliceWins()); !errors.Is(err, ErrMatchNotFound) {
		t.Fatalf("report after the deadline: %v", err)
	}
}

func TestResultTokens(t *testing.T) {
	a, b := NewResultTokens([]byte("key one, long enough to sign with")), NewResultTokens([]byte("key two, long enough to sign with"))
	tok := a.For("m1")
	if !a.Valid("m1", tok) {
		t.Fatal("own token refused")
	}
	for name, ok := range map[string]bool{
		"other match": a.Valid("m2", tok), "other key": b.Valid("m1", tok), "empty": a.Valid("m1", ""),
		"truncated": a.Valid("m1", tok[:len(tok)-1]), "zero key": ResultTokens{}.Valid("m1", tok),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
