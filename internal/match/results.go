package match

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rallyhq/rally/internal/rating"
	"github.com/rallyhq/rally/internal/store"
)

// Errors of result reports, each mapped to one status code by the service.
var (
	// ErrMatchNotFound: no such match, its result is already in, or the
	// caller did not play it (a stranger learns nothing more).
	ErrMatchNotFound = errors.New("match: no such match (or its result is already in)")
	// ErrServerReports: the queue takes results from its game server only.
	ErrServerReports = errors.New("match: this queue's results are reported by the game server")
	// ErrBadResult wraps every reason a result is malformed.
	ErrBadResult = errors.New("match: invalid result")
	// ErrAlreadyReported: the caller's team reported a different result.
	ErrAlreadyReported = errors.New("match: your team already reported a different result")
	// ErrDisputed: the teams' reports conflict; the match rates nobody.
	ErrDisputed = errors.New("match: the reports of this match conflict; it rates nobody")
)

// Outcome is where a match's result stands after a report.
type Outcome int

// Outcomes of a report.
const (
	// Pending: the report is recorded and other teams have yet to report.
	Pending Outcome = iota + 1
	// Rated: the result counted and ratings moved.
	Rated
	// Disputed: reports conflict; nobody is rated.
	Disputed
)

// Placement is one line of a result: players and their rank (0 is first;
// ties share a rank).
type Placement struct {
	UserIDs []string
	Rank    int
}

// ResultTokens mint and check result tokens: an HMAC of the match id, so
// any node holding the shared secret can check a game server's report
// without storing anything.
type ResultTokens struct{ key []byte }

// NewResultTokens derives the token key from secret (the session signing
// key), kept apart from its other uses by a fixed label.
func NewResultTokens(secret []byte) ResultTokens {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("rally/match/result-token/v1"))
	return ResultTokens{key: mac.Sum(nil)}
}

// For returns the result token of a match.
func (t ResultTokens) For(matchID string) string {
	mac := hmac.New(sha256.New, t.key)
	mac.Write([]byte(matchID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// Valid reports whether token is the result token of matchID, in constant
// time.
func (t ResultTokens) Valid(matchID, token string) bool {
	if len(t.key) == 0 || token == "" {
		return false
	}
	return hmac.Equal([]byte(t.For(matchID)), []byte(token))
}

// MatchRecordTTL is how long a match's result can be reported.
const MatchRecordTTL = 6 * time.Hour

const disputesBucket = "match_disputes"

// Results keeps the matches awaiting a result and applies results to
// ratings: a result counts once, from the match's host (result token or
// server code) at once, or from the players when every team's report
// agrees. Records live in memory for MatchRecordTTL: a match lives in a
// room of this node, which a restart ends anyway, and unreported matches
// must not pile up on disk. Disputes are kept in the store.
type Results struct {
	Ratings *StoreRatings
	Tokens  ResultTokens
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	matches map[string]*matchRecord
	swept   time.Time
	closed  bool

	outcomes *prometheus.CounterVec
	awaiting prometheus.GaugeFunc
}

type matchRecord struct {
	id      string
	teams   [][]string
	rules   ResultRules
	at      time.Time
	reports map[int]playerReport // by team index
	timer   *time.Timer          // the deadline, from the first report
	dispute bool
}

type playerReport struct {
	by    string
	ranks []int // dense rank per team index
}

// NewResults returns the result ledger over ratings; reg may be nil.
func NewResults(ratings *StoreRatings, tokens ResultTokens, reg prometheus.Registerer, log *slog.Logger) *Results {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Results{
		Ratings: ratings, Tokens: tokens, log: log, now: time.Now,
		matches: map[string]*matchRecord{},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_match_results_total",
			Help: "Result reports by outcome: rated_host, rated_agreed, rated_timeout, pending, disputed, void_timeout, refused.",
		}, []string{"outcome"}),
	}
	r.awaiting = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rally_match_results_awaiting",
		Help: "Matches made on this node whose result is not in yet.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(len(r.matches))
	})
	if reg != nil {
		reg.MustRegister(r.outcomes, r.awaiting)
	}
	return r
}

// RecordMatch remembers who played a match and whose reports count.
func (r *Results) RecordMatch(_ context.Context, matchID string, teams [][]string, rules ResultRules) error {
	if err := rules.validate(); err != nil {
		return err
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.matches[matchID] = &matchRecord{id: matchID, teams: teams, rules: rules, at: now}
	// Sweeping at most once a minute keeps RecordMatch O(1) on average.
	if now.Sub(r.swept) > time.Minute {
		for id, rec := range r.matches {
			if now.Sub(rec.at) > MatchRecordTTL {
				r.dropLocked(id, rec)
			}
		}
		r.swept = now
	}
	return nil
}

// Forget drops a match that was never played (its allocation failed).
func (r *Results) Forget(matchID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.matches[matchID]; ok {
		r.dropLocked(matchID, rec)
	}
}

// Teams returns who played a match, or ErrMatchNotFound.
func (r *Results) Teams(matchID string) ([][]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.live(matchID)
	if !ok {
		return nil, ErrMatchNotFound
	}
	return rec.teams, nil
}

func (r *Results) live(matchID string) (*matchRecord, bool) {
	rec, ok := r.matches[matchID]
	if !ok || r.now().Sub(rec.at) > MatchRecordTTL {
		return nil, false
	}
	return rec, true
}

func (r *Results) dropLocked(id string, rec *matchRecord) {
	if rec.timer != nil {
		rec.timer.Stop()
	}
	delete(r.matches, id)
}

// Settle applies a result from the match's host (a game server with the
// result token, or server code): it counts at once, whatever the players
// reported, and settles a dispute.
func (r *Results) Settle(ctx context.Context, matchID string, result []Placement) (map[string]rating.Rating, error) {
	r.mu.Lock()
	rec, ok := r.live(matchID)
	if !ok {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return nil, ErrMatchNotFound
	}
	ranks, err := rec.ranks(result)
	if err != nil {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return nil, err
	}
	r.dropLocked(matchID, rec)
	r.mu.Unlock()
	return r.rate(ctx, rec, ranks, "rated_host")
}

// Report records a player's report for their team. The match is rated when
// every team has reported the same result; a conflicting report disputes
// it. A stranger gets ErrMatchNotFound.
func (r *Results) Report(ctx context.Context, matchID, userID string, result []Placement) (Outcome, map[string]rating.Rating, error) {
	r.mu.Lock()
	rec, ok := r.live(matchID)
	team := -1
	if ok {
		team = rec.teamOf(userID)
	}
	if team < 0 {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return 0, nil, ErrMatchNotFound
	}
	if rec.rules.Reporter == "server" {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return 0, nil, ErrServerReports
	}
	if rec.dispute {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return Disputed, nil, ErrDisputed
	}
	ranks, err := rec.ranks(result)
	if err != nil {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("refused").Inc()
		return 0, nil, err
	}
	if prev, ok := rec.reports[team]; ok {
		r.mu.Unlock()
		if slices.Equal(prev.ranks, ranks) {
			return Pending, nil, nil // the same report again
		}
		r.outcomes.WithLabelValues("refused").Inc()
		return 0, nil, ErrAlreadyReported
	}
	for _, other := range rec.reports {
		if !slices.Equal(other.ranks, ranks) {
			rec.dispute = true
			if rec.timer != nil {
				rec.timer.Stop()
			}
			rec.reports[team] = playerReport{by: userID, ranks: ranks}
			dispute := rec.disputeRecord(r.now())
			r.mu.Unlock()
			r.outcomes.WithLabelValues("disputed").Inc()
			r.log.Warn("match result disputed", "match.id", matchID, "reports", len(dispute.Reports))
			if err := r.saveDispute(ctx, matchID, dispute); err != nil {
				return Disputed, nil, err
			}
			return Disputed, nil, nil
		}
	}
	if rec.reports == nil {
		rec.reports = map[int]playerReport{}
		rec.timer = time.AfterFunc(rec.rules.Deadline.D(), func() { r.expire(rec) })
	}
	rec.reports[team] = playerReport{by: userID, ranks: ranks}
	if len(rec.reports) < len(rec.teams) {
		r.mu.Unlock()
		r.outcomes.WithLabelValues("pending").Inc()
		return Pending, nil, nil
	}
	r.dropLocked(matchID, rec)
	r.mu.Unlock()
	rated, err := r.rate(ctx, rec, ranks, "rated_agreed")
	if err != nil {
		return 0, nil, err
	}
	return Rated, rated, nil
}

// expire decides a match whose teams did not all report by the deadline.
func (r *Results) expire(rec *matchRecord) {
	r.mu.Lock()
	if r.closed || r.matches[rec.id] != rec || rec.dispute {
		r.mu.Unlock()
		return
	}
	r.dropLocked(rec.id, rec)
	var ranks []int
	for _, rep := range rec.reports {
		ranks = rep.ranks // every report in agrees, or the match is disputed
	}
	r.mu.Unlock()
	if rec.rules.OnTimeout != "reported" || ranks == nil {
		r.outcomes.WithLabelValues("void_timeout").Inc()
		r.log.Info("match result void: not every team reported", "match.id", rec.id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.rate(ctx, rec, ranks, "rated_timeout"); err != nil {
		r.log.Warn("rating a match at its result deadline", "match.id", rec.id, "err", err)
	}
}

// Close stops the deadlines; results reported after it are still taken.
func (r *Results) Close(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, rec := range r.matches {
		if rec.timer != nil {
			rec.timer.Stop()
		}
	}
	return nil
}

// rate applies ranks (one per team) to the players' stored ratings.
func (r *Results) rate(ctx context.Context, rec *matchRecord, ranks []int, outcome string) (map[string]rating.Rating, error) {
	var users []string
	for _, team := range rec.teams {
		users = append(users, team...)
	}
	current, err := r.Ratings.Get(ctx, users)
	if err != nil {
		return nil, r.restore(rec, err)
	}
	teams := make([][]rating.Rating, len(rec.teams))
	for i, team := range rec.teams {
		for _, u := range team {
			teams[i] = append(teams[i], current[u])
		}
	}
	rated, err := RatingModel().Rate(teams, ranks)
	if err != nil {
		return nil, r.restore(rec, fmt.Errorf("%w: %v", ErrBadResult, err))
	}
	updated := make(map[string]rating.Rating, len(users))
	for i, team := range rec.teams {
		for j, u := range team {
			updated[u] = rated[i][j]
		}
	}
	if err := r.Ratings.Put(ctx, updated); err != nil {
		return nil, r.restore(rec, err)
	}
	r.outcomes.WithLabelValues(outcome).Inc()
	return updated, nil
}

// restore puts a match back after its rating failed, so the result can be
// reported again.
func (r *Results) restore(rec *matchRecord, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.matches[rec.id]; !ok && !r.closed {
		rec.reports, rec.timer = nil, nil
		r.matches[rec.id] = rec
	}
	return err
}

func (rec *matchRecord) teamOf(userID string) int {
	for i, team := range rec.teams {
		if slices.Contains(team, userID) {
			return i
		}
	}
	return -1
}

// ranks checks a result against who played (every player once, a team's
// players on one rank) and returns each team's dense rank.
func (rec *matchRecord) ranks(result []Placement) ([]int, error) {
	given := map[string]int{}
	for _, p := range result {
		if p.Rank < 0 {
			return nil, fmt.Errorf("%w: negative rank", ErrBadResult)
		}
		for _, u := range p.UserIDs {
			if _, dup := given[u]; dup {
				return nil, fmt.Errorf("%w: user %s is listed twice", ErrBadResult, u)
			}
			if rec.teamOf(u) < 0 {
				return nil, fmt.Errorf("%w: user %s did not play this match", ErrBadResult, u)
			}
			given[u] = p.Rank
		}
	}
	raw := make([]int, len(rec.teams))
	for i, team := range rec.teams {
		for j, u := range team {
			rank, ok := given[u]
			if !ok {
				return nil, fmt.Errorf("%w: user %s is missing (list every player of the match)", ErrBadResult, u)
			}
			if j > 0 && rank != raw[i] {
				return nil, fmt.Errorf("%w: the players of a team share one rank", ErrBadResult)
			}
			raw[i] = rank
		}
	}
	// Dense ranks: reports that order the teams alike compare equal.
	distinct := slices.Clone(raw)
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	for i, v := range raw {
		raw[i], _ = slices.BinarySearch(distinct, v)
	}
	return raw, nil
}

type disputeRecord struct {
	Teams   [][]string      `json:"teams"`
	Reports []disputeReport `json:"reports"`
	At      time.Time       `json:"at"`
}

type disputeReport struct {
	By    string `json:"by"`
	Ranks []int  `json:"ranks"`
}

func (rec *matchRecord) disputeRecord(now time.Time) disputeRecord {
	d := disputeRecord{Teams: rec.teams, At: now}
	for team := range len(rec.teams) {
		if rep, ok := rec.reports[team]; ok {
			d.Reports = append(d.Reports, disputeReport{By: rep.by, Ranks: rep.ranks})
		}
	}
	return d
}

func (r *Results) saveDispute(ctx context.Context, matchID string, d disputeRecord) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return r.Ratings.St.Put(ctx, disputesBucket, matchID, b)
}

// Dispute returns the stored reports of a disputed match, for operators.
func (r *Results) Dispute(ctx context.Context, matchID string) ([][]string, map[string][]int, error) {
	b, err := r.Ratings.St.Get(ctx, disputesBucket, matchID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, ErrMatchNotFound
	} else if err != nil {
		return nil, nil, err
	}
	var d disputeRecord
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil, err
	}
	out := map[string][]int{}
	for _, rep := range d.Reports {
		out[rep.By] = rep.Ranks
	}
	return d.Teams, out, nil
}
