// Package match is Rally's matchmaker: tickets wait in pools indexed by
// rating; every pass, each waiting ticket (oldest first) looks for the
// nearest compatible tickets within its queue's rating window, latency and
// distance limits, which widen with its wait; a full group is claimed
// atomically from the pool (so a ticket is in at most one match, even with
// several replicas sharing a Redis pool) and handed to an Allocator.
package match

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UpdateKind says what happened to a ticket.
type UpdateKind int

const (
	Queued UpdateKind = iota + 1
	Widened
	Matched
	Cancelled
	Expired
)

func (k UpdateKind) String() string {
	return [...]string{"", "queued", "widened", "matched", "cancelled", "expired"}[k]
}

// Terminal reports whether no update follows this one.
func (k UpdateKind) Terminal() bool { return k >= Matched }

// Update is one event in a ticket's life.
type Update struct {
	Kind     UpdateKind
	TicketID string
	Ticket   *Ticket // may be nil for cancel/expire of a ticket not held locally
	// The search limits in force (Queued, Widened).
	RatingWindow float64
	MaxLatencyMS float64
	GeoKM        float64
	Assignment   *Assignment // Matched
	Reason       string
}

// Match is a group of tickets the engine claimed together.
type Match struct {
	ID      string
	Queue   *Queue
	Tickets []*Ticket
	// Teams lists user ids per team (one per player in free-for-all).
	Teams  [][]string
	Region string
	// Spread is the highest minus the lowest ticket rating.
	Spread float64
	// ResultToken lets whoever hosts the match (a game server) report its
	// result without a player session; set by RecordingAllocator.
	ResultToken string
}

// Assignment is where a match plays.
type Assignment struct {
	MatchID    string
	RoomID     string
	Connection string
	// Reservations maps each user to the token that holds their seat.
	Reservations map[string]string
	Teams        [][]string
	Region       string
}

// Allocator places a match: the built-in one creates a Rally room; a
// dedicated-server allocator (the Kubernetes operator) can replace it.
type Allocator interface {
	Allocate(ctx context.Context, m *Match) (*Assignment, error)
}

// Options configures an Engine.
type Options struct {
	// Now is the clock; tests inject one.
	Now func() time.Time
	// Seed makes tie-breaks and pass start places reproducible under test;
	// ids are always random.
	Seed uint64
	// Notify receives every update; it must not block.
	Notify func(Update)
	// AnchorsPerPass bounds the tickets each pool key considers per pass.
	AnchorsPerPass int
	// Shared says other engines (replicas) work on the same pool: each
	// pass then starts at a random place in the line of waiting tickets,
	// so replicas mostly build different matches instead of racing for the
	// same claims. Every waiting ticket is still looked at each pass.
	Shared     bool
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Engine matches tickets. Several engines (replicas) may share one Pool.
type Engine struct {
	queues map[string]*Queue
	pool   Pool
	alloc  Allocator
	opts   Options
	log    *slog.Logger
	m      *metrics

	mu     sync.Mutex     // one pass at a time; guards widest
	widest map[string]int // ticket id -> widening step announced

	// kick asks Run for a pass soon: new tickets arrived.
	kick chan struct{}

	rngMu sync.Mutex
	rng   *rand.Rand // where shared passes start
}

// NewEngine returns an engine for rules over pool.
func NewEngine(rules *Rules, pool Pool, alloc Allocator, opts Options) *Engine {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Notify == nil {
		opts.Notify = func(Update) {}
	}
	if opts.AnchorsPerPass == 0 {
		opts.AnchorsPerPass = 2000
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Seed == 0 {
		opts.Seed = uint64(time.Now().UnixNano())
	}
	e := &Engine{
		queues: map[string]*Queue{}, pool: pool, alloc: alloc, opts: opts, log: opts.Log,
		m:      newMetrics(opts.Registerer),
		rng:    rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		widest: map[string]int{},
		kick:   make(chan struct{}, 1),
	}
	for _, q := range rules.Queues {
		e.queues[q.Name] = q
	}
	return e
}

// Queue returns a queue's rules.
func (e *Engine) Queue(name string) (*Queue, bool) {
	q, ok := e.queues[name]
	return q, ok
}

// ErrInvalidTicket wraps every reason a ticket is refused.
var ErrInvalidTicket = errors.New("match: invalid ticket")

// NewID returns a fresh unguessable id (128 bits from crypto/rand): a
// ticket or match id is all a caller needs to name one.
func (e *Engine) NewID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // crypto/rand never fails; it crashes instead
	return hex.EncodeToString(b[:])
}

// Submit validates a ticket against its queue and queues it.
func (e *Engine) Submit(ctx context.Context, t *Ticket) error {
	q, ok := e.queues[t.Queue]
	if !ok {
		return fmt.Errorf("%w: no queue %q", ErrInvalidTicket, t.Queue)
	}
	if err := q.admit(t); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidTicket, err)
	}
	if t.ID == "" {
		t.ID = e.NewID()
	}
	t.Created = e.opts.Now()
	var sum float64
	for _, p := range t.Players {
		sum += p.Mu
	}
	t.Rating = sum / float64(len(t.Players))
	t.PoolKey = poolKey(q, t)
	if err := e.pool.Add(ctx, t); err != nil {
		return err
	}
	e.m.submitted.WithLabelValues(q.Name).Inc()
	select {
	case e.kick <- struct{}{}:
	default:
	}
	lat, _ := q.Latency.At(0)
	geo, _ := q.GeoKM.At(0)
	e.opts.Notify(Update{Kind: Queued, TicketID: t.ID, Ticket: t, RatingWindow: q.Rating.Initial, MaxLatencyMS: lat, GeoKM: geo})
	return nil
}

// poolKey pools a queue's tickets by the values of its "same" attributes.
func poolKey(q *Queue, t *Ticket) string {
	if len(q.Same) == 0 {
		return q.Name
	}
	var b strings.Builder
	b.WriteString(q.Name)
	for _, a := range q.Same {
		b.WriteByte('|')
		b.WriteString(t.Strings[a])
	}
	return b.String()
}

func queueOf(poolKey string) string {
	name, _, _ := strings.Cut(poolKey, "|")
	return name
}

// Waiting returns the ticket if it is still waiting for a match.
func (e *Engine) Waiting(ctx context.Context, id string) (*Ticket, bool, error) {
	return e.pool.Waiting(ctx, id)
}

// Cancel withdraws a waiting ticket; false means it was no longer waiting
// (already matched, cancelled or expired).
func (e *Engine) Cancel(ctx context.Context, id string) (bool, error) {
	ok, err := e.pool.Remove(ctx, id)
	if err != nil || !ok {
		return false, err
	}
	e.forget(id)
	e.m.ended.WithLabelValues("cancelled").Inc()
	e.opts.Notify(Update{Kind: Cancelled, TicketID: id, Reason: "cancelled by the player"})
	return true, nil
}

func (e *Engine) forget(id string) {
	e.mu.Lock()
	delete(e.widest, id)
	e.mu.Unlock()
}

// Run makes matching passes until ctx ends: soon after tickets arrive (at
// most one pass per minGap, so a burst is matched in one pass), and every
// interval regardless, for widening and expiry.
func (e *Engine) Run(ctx context.Context, interval time.Duration) {
	const minGap = 2 * time.Millisecond
	t := time.NewTicker(interval)
	defer t.Stop()
	gap := time.NewTimer(0)
	defer gap.Stop()
	<-gap.C
	var last time.Time
	pass := func() {
		last = time.Now()
		if _, err := e.Pass(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("matchmaking pass failed", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pass()
		case <-e.kick:
			if wait := minGap - time.Since(last); wait > 0 {
				gap.Reset(wait)
				select {
				case <-ctx.Done():
					return
				case <-gap.C:
				}
			}
			pass()
		}
	}
}

// Pass runs one matching pass over every pool and returns the matches made.
func (e *Engine) Pass(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	keys, err := e.pool.Keys(ctx)
	if err != nil {
		return 0, err
	}
	sort.Strings(keys) // deterministic order under test
	made := 0
	for _, key := range keys {
		q, ok := e.queues[queueOf(key)]
		if !ok {
			continue
		}
		n, err := e.passPool(ctx, q, key)
		made += n
		if err != nil {
			return made, err
		}
	}
	e.m.passSeconds.Observe(time.Since(start).Seconds())
	return made, nil
}

func (e *Engine) passPool(ctx context.Context, q *Queue, key string) (int, error) {
	anchors, err := e.pool.Oldest(ctx, key, e.opts.AnchorsPerPass)
	if err != nil {
		return 0, err
	}
	now := e.opts.Now()
	need, least := q.Players()
	taken := map[string]bool{}
	made := 0
	if e.opts.Shared && len(anchors) > 1 {
		e.rngMu.Lock()
		off := e.rng.IntN(len(anchors))
		e.rngMu.Unlock()
		anchors = append(anchors[off:], anchors[:off]...)
	}
	// Anchors go in chunks: the candidates of a whole chunk are fetched at
	// once (one round trip on a Redis pool), then each anchor picks and
	// claims in order; a claim still fails as a whole if anything it wants
	// was taken meanwhile.
	const chunk = 64
	for i := 0; i < len(anchors); i += chunk {
		var jobs []anchorJob
		for _, a := range anchors[i:min(i+chunk, len(anchors))] {
			if taken[a.ID] {
				continue
			}
			if job, ok := e.prepare(q, a, now); ok {
				jobs = append(jobs, job)
			} else if ok, err := e.pool.Remove(ctx, a.ID); err == nil && ok {
				delete(e.widest, a.ID)
				e.m.ended.WithLabelValues("expired").Inc()
				e.opts.Notify(Update{Kind: Expired, TicketID: a.ID, Ticket: a,
					Reason: fmt.Sprintf("no match within %s", q.MaxWait.D())})
			}
		}
		cands, err := e.candidates(ctx, key, jobs, 4*need+8)
		if err != nil {
			return made, err
		}
		// Propose disjoint groups for the chunk, claim them together, then
		// allocate those whose claim held.
		var props []proposal
		for j, job := range jobs {
			if taken[job.a.ID] {
				continue
			}
			group, region := pick(q, job.a, cands[j], taken, need, least, job.latency, job.geo, job.wait)
			if group == nil {
				continue
			}
			// Claimed or not, these tickets sit out the rest of this pass.
			for _, t := range group {
				taken[t.ID] = true
			}
			props = append(props, e.propose(q, group, region))
		}
		ok, err := e.claim(ctx, props)
		if err != nil {
			return made, err
		}
		var finished []string
		for i, pr := range props {
			if !ok[i] {
				e.m.claimConflicts.Inc()
				continue
			}
			allocated, err := e.allocate(ctx, pr)
			if err != nil {
				return made, err
			}
			if allocated {
				made++
				finished = append(finished, pr.ids...)
			}
		}
		if len(finished) > 0 {
			if err := e.pool.Finish(ctx, finished); err != nil {
				e.log.Warn("finishing matched tickets", "err", err)
			}
		}
	}
	return made, nil
}

// anchorJob is an anchor with the limits in force for its wait.
type anchorJob struct {
	a                    *Ticket
	wait                 time.Duration
	window, latency, geo float64
}

// prepare computes an anchor's limits and announces widening; false means
// the ticket has waited past the queue's maximum.
func (e *Engine) prepare(q *Queue, a *Ticket, now time.Time) (anchorJob, bool) {
	wait := now.Sub(a.Created)
	if wait >= q.MaxWait.D() {
		return anchorJob{}, false
	}
	window, rStep := q.Rating.At(wait)
	latency, lStep := q.Latency.At(wait)
	geo, gStep := q.GeoKM.At(wait)
	// Steps only grow; a ticket seen for the first time here (queued by
	// another replica, or before a restart) is not announced.
	step := rStep + lStep + gStep
	if prev, seen := e.widest[a.ID]; !seen || step > prev {
		if seen {
			e.opts.Notify(Update{Kind: Widened, TicketID: a.ID, Ticket: a, RatingWindow: window, MaxLatencyMS: latency, GeoKM: geo})
			e.m.widened.WithLabelValues(q.Name).Inc()
		}
		e.widest[a.ID] = step
	}
	return anchorJob{a: a, wait: wait, window: window, latency: latency, geo: geo}, true
}

// NearQuery is one anchor's candidate search, for pools that answer many
// at once.
type NearQuery struct {
	Rating, Window float64
	Limit          int
}

// nearBatcher is a Pool that answers several Near queries in one call
// (RedisPool: one round trip).
type nearBatcher interface {
	NearMany(ctx context.Context, poolKey string, qs []NearQuery) ([][]*Ticket, error)
}

func (e *Engine) candidates(ctx context.Context, key string, jobs []anchorJob, limit int) ([][]*Ticket, error) {
	if nb, ok := e.pool.(nearBatcher); ok && len(jobs) > 1 {
		qs := make([]NearQuery, len(jobs))
		for i, j := range jobs {
			qs[i] = NearQuery{Rating: j.a.Rating, Window: j.window, Limit: limit}
		}
		return nb.NearMany(ctx, key, qs)
	}
	out := make([][]*Ticket, len(jobs))
	for i, j := range jobs {
		c, err := e.pool.Near(ctx, key, j.a.Rating, j.window, limit)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// pick chooses the anchor's match: candidates nearest in rating first,
// each kept only if it fits (party sizes, a common region within the
// latency limit, distance), until the match is full. Free-for-all may start
// short of full once the anchor has waited FillFor.
func pick(q *Queue, a *Ticket, cands []*Ticket, taken map[string]bool, need, least int, latency, geoKM float64, wait time.Duration) ([]*Ticket, string) {
	group := []*Ticket{a}
	players := len(a.Players)
	regions := regionsWithin(a, latency, nil)
	if regions != nil && len(regions) == 0 {
		return nil, "" // the anchor itself is too far from every region for now
	}
	for _, c := range cands {
		if players == need {
			break
		}
		if c.ID == a.ID || taken[c.ID] || players+len(c.Players) > need {
			continue
		}
		if geoKM > 0 && a.Geo != nil && c.Geo != nil && haversineKM(*a.Geo, *c.Geo) > geoKM {
			continue
		}
		next := regions
		if latency > 0 {
			// nil means any region is still possible; an empty set means
			// no region suits everyone.
			next = regionsWithin(c, latency, regions)
			if next != nil && len(next) == 0 {
				continue
			}
		}
		group = append(group, c)
		players += len(c.Players)
		regions = next
	}
	if players < need && !(q.FreeForAll != nil && players >= least && wait >= q.FreeForAll.FillFor.D()) {
		return nil, ""
	}
	return group, bestRegion(regions)
}

// regionsWithin narrows the candidate regions (nil: any) to those where t
// is within limit. A ticket without latencies fits any region.
func regionsWithin(t *Ticket, limit float64, in map[string]float64) map[string]float64 {
	if limit <= 0 || len(t.Regions) == 0 {
		return in
	}
	out := map[string]float64{}
	for r, ms := range t.Regions {
		if float64(ms) > limit {
			continue
		}
		if in == nil {
			out[r] = float64(ms)
		} else if worst, ok := in[r]; ok {
			out[r] = math.Max(worst, float64(ms))
		}
	}
	return out
}

// bestRegion is the region with the lowest worst latency.
func bestRegion(regions map[string]float64) string {
	best, bestMS := "", math.Inf(1)
	for r, ms := range regions {
		if ms < bestMS || ms == bestMS && r < best {
			best, bestMS = r, ms
		}
	}
	return best
}

func haversineKM(a, b GeoPoint) float64 {
	const earthKM = 6371.0
	rad := math.Pi / 180
	dLat, dLon := (b.Lat-a.Lat)*rad, (b.Lon-a.Lon)*rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthKM * math.Asin(math.Min(1, math.Sqrt(h)))
}

// proposal is a group the engine wants to claim as one match.
type proposal struct {
	m   *Match
	ids []string
}

func (e *Engine) propose(q *Queue, group []*Ticket, region string) proposal {
	ids := make([]string, len(group))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, t := range group {
		ids[i] = t.ID
		lo, hi = math.Min(lo, t.Rating), math.Max(hi, t.Rating)
	}
	m := &Match{ID: e.NewID(), Queue: q, Tickets: group, Region: region, Teams: teams(q, group), Spread: hi - lo}
	return proposal{m: m, ids: ids}
}

// ClaimRequest is one match's claim, for pools that take many at once.
type ClaimRequest struct {
	MatchID string
	IDs     []string
}

// claimBatcher is a Pool that makes several claims in one call, each still
// atomic on its own (RedisPool: one round trip).
type claimBatcher interface {
	ClaimMany(ctx context.Context, claims []ClaimRequest) ([]bool, error)
}

// claim claims every proposal, each all-or-nothing.
func (e *Engine) claim(ctx context.Context, props []proposal) ([]bool, error) {
	if cb, ok := e.pool.(claimBatcher); ok && len(props) > 1 {
		reqs := make([]ClaimRequest, len(props))
		for i, p := range props {
			reqs[i] = ClaimRequest{MatchID: p.m.ID, IDs: p.ids}
		}
		return cb.ClaimMany(ctx, reqs)
	}
	out := make([]bool, len(props))
	for i, p := range props {
		ok, err := e.pool.Claim(ctx, p.m.ID, p.ids)
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, nil
}

// allocate places a claimed match and tells its tickets; a failed
// allocation puts the tickets back at the front of the line.
func (e *Engine) allocate(ctx context.Context, p proposal) (bool, error) {
	m := p.m
	asg, err := e.alloc.Allocate(ctx, m)
	if err != nil {
		e.m.allocFailures.Inc()
		e.log.Warn("match allocation failed; tickets requeued", "match", m.ID, "err", err)
		return false, e.pool.Requeue(ctx, p.ids)
	}
	now := e.opts.Now()
	for _, t := range m.Tickets {
		delete(e.widest, t.ID)
		e.m.timeToMatch.WithLabelValues(m.Queue.Name).Observe(now.Sub(t.Created).Seconds())
		e.opts.Notify(Update{Kind: Matched, TicketID: t.ID, Ticket: t, Assignment: asg})
	}
	e.m.matches.WithLabelValues(m.Queue.Name).Inc()
	e.m.spread.WithLabelValues(m.Queue.Name).Observe(m.Spread)
	return true, nil
}

// teams balances parties over the queue's teams: largest parties first,
// each into the team with room and the lowest rating total so far.
func teams(q *Queue, group []*Ticket) [][]string {
	if q.FreeForAll != nil {
		out := make([][]string, 0, len(group))
		for _, t := range group {
			for _, p := range t.Players {
				out = append(out, []string{p.UserID})
			}
		}
		return out
	}
	parties := append([]*Ticket(nil), group...)
	sort.SliceStable(parties, func(i, j int) bool {
		if len(parties[i].Players) != len(parties[j].Players) {
			return len(parties[i].Players) > len(parties[j].Players)
		}
		return parties[i].Rating > parties[j].Rating
	})
	out := make([][]string, q.Teams)
	total := make([]float64, q.Teams)
	for _, t := range parties {
		best := -1
		for i := range out {
			if len(out[i])+len(t.Players) <= q.TeamSize && (best < 0 || total[i] < total[best]) {
				best = i
			}
		}
		if best < 0 {
			best = 0 // cannot happen when party sizes were admitted; keep everyone seated
		}
		for _, p := range t.Players {
			out[best] = append(out[best], p.UserID)
			total[best] += p.Mu
		}
	}
	return out
}
