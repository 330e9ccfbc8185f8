package leaderboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Options configures a Service.
type Options struct {
	Backend Backend
	// Now is the clock periods are computed from (default time.Now); tests
	// inject one to cross resets.
	Now func() time.Time
	// MaxMetadataBytes bounds a record's metadata (default 2048).
	MaxMetadataBytes int
	Registerer       prometheus.Registerer
	// TracerProvider defaults to the global one.
	TracerProvider trace.TracerProvider
	Log            *slog.Logger
}

// Service is the leaderboard domain: it validates, resolves boards and
// periods, and calls the Backend. Its methods are the server-side API:
// they write to any board, authoritative or not; the gRPC layer adds the
// player's permissions on top.
type Service struct {
	be      Backend
	now     func() time.Time
	maxMeta int
	m       *metrics
	tracer  trace.Tracer
	log     *slog.Logger

	mu         sync.RWMutex
	boards     map[string]*boardState
	lastReload time.Time
}

type boardState struct {
	def   Board
	sched cron.Schedule // nil: never resets

	mu   sync.Mutex
	cur  Period
	seen Period // the period CheckResets saw last
}

// Page is one page of Top.
type Page struct {
	Records []Record
	// Next continues after the last record; empty on the last page.
	Next   string
	Period string
}

// New returns a Service over the boards the backend holds.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxMetadataBytes <= 0 {
		opts.MaxMetadataBytes = 2048
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Service{
		be: opts.Backend, now: opts.Now, maxMeta: opts.MaxMetadataBytes, m: newMetrics(opts.Registerer),
		tracer: opts.TracerProvider.Tracer("rally/leaderboard"), log: opts.Log, boards: map[string]*boardState{},
	}
	if err := s.reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads every definition from the backend (other replicas may have
// created or changed boards).
func (s *Service) reload(ctx context.Context) error {
	defs, err := s.be.Boards(ctx)
	if err != nil {
		return fmt.Errorf("leaderboard: load boards: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastReload = time.Now()
	for _, d := range defs {
		sched, err := d.Validate()
		if err != nil {
			s.log.Warn("stored leaderboard board is invalid; skipped", "board", d.ID, "err", err)
			continue
		}
		if old := s.boards[d.ID]; old != nil && old.def.Since.Equal(d.Since) && old.def.sameSchedule(&d) {
			old.mu.Lock()
			old.def = d // same periods; keep the cached one
			old.mu.Unlock()
			continue
		}
		s.boards[d.ID] = &boardState{def: d, sched: sched}
	}
	s.m.boards.Set(float64(len(s.boards)))
	return nil
}

// CreateBoard creates b, or updates the board with its id. A board's sort
// order cannot change (its records are ordered by it); changing the reset
// schedule ends the current period now. Creating a board exactly as it is
// stored changes nothing.
func (s *Service) CreateBoard(ctx context.Context, b Board) (_ Board, err error) {
	ctx, end := s.begin(ctx, "create_board", attribute.String("leaderboard.id", b.ID))
	defer end(&err)
	b = b.clone()
	sched, err := b.Validate()
	if err != nil {
		return Board{}, s.reject("bad_board", err)
	}
	if b.Operator == OpDefault {
		b.Operator = OpBest
	}
	if len(b.Metadata) == 0 {
		b.Metadata = nil
	}
	now := s.now().Truncate(time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	b.Created, b.Since = now, now
	if old := s.boards[b.ID]; old != nil {
		prev := old.def
		if prev.Sort != b.Sort {
			return Board{}, fmt.Errorf("leaderboard: %w: board %s is sorted %s; its order cannot change (create a new board)",
				ErrPrecondition, b.ID, prev.Sort)
		}
		b.Created = prev.Created
		if prev.sameSchedule(&b) {
			b.Since = prev.Since
		}
		if boardsEqual(&prev, &b) {
			return prev.clone(), nil
		}
	}
	if err := s.be.SaveBoard(ctx, b); err != nil {
		return Board{}, err
	}
	if old := s.boards[b.ID]; old != nil && old.def.Since.Equal(b.Since) {
		old.mu.Lock()
		old.def = b
		old.mu.Unlock()
	} else {
		s.boards[b.ID] = &boardState{def: b, sched: sched}
	}
	s.m.boards.Set(float64(len(s.boards)))
	return b.clone(), nil
}

func boardsEqual(a, b *Board) bool {
	return a.ID == b.ID && a.Sort == b.Sort && a.Operator == b.Operator && a.Reset == b.Reset &&
		a.TimeZone == b.TimeZone && a.Authoritative == b.Authoritative && maps.Equal(a.Metadata, b.Metadata) &&
		a.Created.Equal(b.Created) && a.Since.Equal(b.Since)
}

// Board returns a board's definition and its current period.
func (s *Service) Board(ctx context.Context, id string) (Board, Period, error) {
	st, err := s.board(ctx, id)
	if err != nil {
		return Board{}, Period{}, err
	}
	def := st.definition()
	return def, st.periodAt(s.now()), nil
}

// Boards returns every board, by id.
func (s *Service) Boards() []Board {
	s.mu.RLock()
	out := make([]Board, 0, len(s.boards))
	for _, st := range s.boards {
		out = append(out, st.definition())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Board) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// CurrentPeriod returns the period a write to board would land in now.
func (s *Service) CurrentPeriod(ctx context.Context, board string) (Period, error) {
	st, err := s.board(ctx, board)
	if err != nil {
		return Period{}, err
	}
	return st.periodAt(s.now()), nil
}

func (st *boardState) definition() Board {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.def.clone()
}

// board finds a board; an id this node does not know is looked up in the
// backend, in case another replica created it.
func (s *Service) board(ctx context.Context, id string) (*boardState, error) {
	if !boardID.MatchString(id) {
		return nil, s.reject("bad_board", invalidf("board id %q: want 1-64 characters of A-Z a-z 0-9 _ . -", id))
	}
	s.mu.RLock()
	st := s.boards[id]
	s.mu.RUnlock()
	if st != nil {
		return st, nil
	}
	d, err := s.be.Board(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, s.reject("bad_board", err)
	}
	if err != nil {
		return nil, err
	}
	sched, err := d.Validate()
	if err != nil {
		return nil, fmt.Errorf("leaderboard: stored board %s is invalid: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.boards[id]; st != nil {
		return st, nil
	}
	st = &boardState{def: d, sched: sched}
	s.boards[id] = st
	s.m.boards.Set(float64(len(s.boards)))
	return st, nil
}

// periodAt returns the period holding now. Periods run from one scheduled
// reset to the next, counted from the board's Since, so every replica with
// the same definition agrees on them.
func (st *boardState) periodAt(now time.Time) Period {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sched == nil {
		return Period{ID: AllPeriod, Start: st.def.Created}
	}
	if st.cur.ID != "" && !now.Before(st.cur.Start) && (st.cur.End.IsZero() || now.Before(st.cur.End)) {
		return st.cur
	}
	start := st.def.Since
	if st.cur.ID != "" && !now.Before(st.cur.Start) {
		start = st.cur.Start // move on from the last known period
	}
	end := st.sched.Next(start)
	// A clock behind Since still writes to the first period.
	for !end.IsZero() && !now.Before(end) {
		start, end = end, st.sched.Next(end)
	}
	st.cur = Period{ID: periodID(start), Start: start.UTC(), End: end.UTC()}
	return st.cur
}

// period resolves a requested period id: empty is the current one.
func (s *Service) period(st *boardState, id string) (string, error) {
	if id == "" {
		return st.periodAt(s.now()).ID, nil
	}
	if !validPeriodID(id) {
		return "", s.reject("bad_period", invalidf("period %q: want an id from ListPeriods (or empty for the current one)", id))
	}
	return id, nil
}

func (s *Service) checkWrite(w *Write) error {
	if err := validOwner(w.Owner); err != nil {
		return s.reject("bad_owner", err)
	}
	if len(w.Username) > MaxUsernameBytes {
		return s.reject("bad_owner", invalidf("username longer than %d bytes", MaxUsernameBytes))
	}
	if err := printable("username", w.Username); err != nil {
		return s.reject("bad_owner", err)
	}
	if w.Score > MaxScore || w.Score < -MaxScore || w.Subscore > MaxScore || w.Subscore < -MaxScore {
		return s.reject("score_range", invalidf("score and subscore must be within ±%d", int64(MaxScore)))
	}
	if len(w.Metadata) > s.maxMeta {
		return s.reject("metadata_too_large", invalidf("metadata is %d bytes; at most %d (leaderboard.max_metadata_bytes)", len(w.Metadata), s.maxMeta))
	}
	if !utf8.ValidString(w.Metadata) {
		return s.reject("metadata_too_large", invalidf("metadata is not valid UTF-8"))
	}
	if w.Operator > OpDecr {
		return s.reject("bad_board", invalidf("unknown operator %d", w.Operator))
	}
	return nil
}

// Submit writes one score to board, whatever its authoritative flag: this
// is the server's path. It returns once the write is durable.
func (s *Service) Submit(ctx context.Context, board string, w Write) (Result, error) {
	res, err := s.SubmitMany(ctx, board, []Write{w})
	if err != nil {
		return Result{}, err
	}
	if res[0].Err != nil {
		return res[0], res[0].Err
	}
	return res[0], nil
}

// SubmitMany writes several scores to board in one durable batch (the
// results of a match, say), applied in order. A write that an operator
// drives out of range fails alone, in its Result.
func (s *Service) SubmitMany(ctx context.Context, board string, ws []Write) (_ []Result, err error) {
	attrs := []attribute.KeyValue{attribute.String("leaderboard.id", board), attribute.Int("leaderboard.writes", len(ws))}
	if len(ws) == 1 {
		attrs = append(attrs, attribute.String("player.id", ws[0].Owner))
	}
	ctx, end := s.begin(ctx, "submit", attrs...)
	defer end(&err)
	if len(ws) == 0 {
		return nil, nil
	}
	st, err := s.board(ctx, board)
	if err != nil {
		return nil, err
	}
	def := st.definition()
	resolved := make([]Write, len(ws))
	for i, w := range ws {
		if err := s.checkWrite(&w); err != nil {
			return nil, err
		}
		if w.Operator == OpDefault {
			w.Operator = def.Operator
		}
		resolved[i] = w
	}
	now := s.now()
	p := st.periodAt(now)
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("leaderboard.period", p.ID))
	res, err := s.be.Submit(ctx, &def, p, resolved, now)
	if err != nil {
		return nil, err
	}
	for i := range res {
		r := &res[i]
		r.Period = p.ID
		switch {
		case r.Err != nil:
			s.m.writes.WithLabelValues("out_of_range").Inc()
		case r.Changed:
			s.m.writes.WithLabelValues("changed").Inc()
		default:
			s.m.writes.WithLabelValues("unchanged").Inc()
		}
	}
	return res, nil
}

func (s *Service) limit(n int) (int, error) {
	if n == 0 {
		return DefaultPageSize, nil
	}
	if n < 0 || n > MaxPageSize {
		return 0, s.reject("bad_limit", invalidf("limit must be within 1-%d, got %d", MaxPageSize, n))
	}
	return n, nil
}

// Top returns a page of board in rank order: the first page without a
// cursor, the next one with the previous page's Next. period is ignored
// with a cursor; empty means the current period.
func (s *Service) Top(ctx context.Context, board, period, cur string, limit int) (_ Page, err error) {
	ctx, end := s.begin(ctx, "top", attribute.String("leaderboard.id", board))
	defer end(&err)
	st, err := s.board(ctx, board)
	if err != nil {
		return Page{}, err
	}
	if limit, err = s.limit(limit); err != nil {
		return Page{}, err
	}
	var after *Key
	if cur != "" {
		c, err := decodeCursor(cur)
		if err != nil {
			return Page{}, s.reject("bad_cursor", err)
		}
		if c.board != board {
			return Page{}, s.reject("bad_cursor", invalidf("cursor belongs to board %s", c.board))
		}
		period, after = c.period, &c.key
	} else if period, err = s.period(st, period); err != nil {
		return Page{}, err
	}
	def := st.definition()
	recs, err := s.be.Top(ctx, &def, period, after, limit)
	if err != nil {
		return Page{}, err
	}
	page := Page{Records: recs, Period: period}
	if len(recs) == limit {
		page.Next = cursor{board: board, period: period, key: recs[len(recs)-1].KeyOf(def.Sort)}.encode()
	}
	return page, nil
}

// Around returns up to limit records with owner's in the middle.
func (s *Service) Around(ctx context.Context, board, period, owner string, limit int) (_ []Record, _ string, err error) {
	ctx, end := s.begin(ctx, "around", attribute.String("leaderboard.id", board), attribute.String("player.id", owner))
	defer end(&err)
	_, def, period, err := s.readArgs(ctx, board, period)
	if err != nil {
		return nil, "", err
	}
	if err := validOwner(owner); err != nil {
		return nil, "", s.reject("bad_owner", err)
	}
	if limit, err = s.limit(limit); err != nil {
		return nil, "", err
	}
	recs, err := s.be.Around(ctx, &def, period, owner, limit)
	return recs, period, err
}

func (s *Service) readArgs(ctx context.Context, board, period string) (*boardState, Board, string, error) {
	st, err := s.board(ctx, board)
	if err != nil {
		return nil, Board{}, "", err
	}
	if period, err = s.period(st, period); err != nil {
		return nil, Board{}, "", err
	}
	return st, st.definition(), period, nil
}

// Records returns the records of the listed owners that have one.
func (s *Service) Records(ctx context.Context, board, period string, owners []string) (_ []Record, _ string, err error) {
	ctx, end := s.begin(ctx, "records", attribute.String("leaderboard.id", board), attribute.Int("leaderboard.owners", len(owners)))
	defer end(&err)
	_, def, period, err := s.readArgs(ctx, board, period)
	if err != nil {
		return nil, "", err
	}
	if len(owners) > MaxOwnersPerRequest {
		return nil, "", s.reject("too_many_owners", invalidf("at most %d owners per request, got %d", MaxOwnersPerRequest, len(owners)))
	}
	for _, o := range owners {
		if err := validOwner(o); err != nil {
			return nil, "", s.reject("bad_owner", err)
		}
	}
	if len(owners) == 0 {
		return nil, period, nil
	}
	recs, err := s.be.Records(ctx, &def, period, owners)
	return recs, period, err
}

// Rank returns owner's record with its rank, or ErrNotFound.
func (s *Service) Rank(ctx context.Context, board, period, owner string) (_ Record, _ string, err error) {
	ctx, end := s.begin(ctx, "rank", attribute.String("leaderboard.id", board), attribute.String("player.id", owner))
	defer end(&err)
	_, def, period, err := s.readArgs(ctx, board, period)
	if err != nil {
		return Record{}, "", err
	}
	if err := validOwner(owner); err != nil {
		return Record{}, "", s.reject("bad_owner", err)
	}
	recs, err := s.be.Records(ctx, &def, period, []string{owner})
	if err != nil {
		return Record{}, "", err
	}
	if len(recs) == 0 {
		return Record{}, "", fmt.Errorf("leaderboard: %w: %s has no record on %s in period %s", ErrNotFound, owner, board, period)
	}
	return recs[0], period, nil
}

// Delete removes owner's record and reports whether there was one.
func (s *Service) Delete(ctx context.Context, board, period, owner string) (_ bool, err error) {
	ctx, end := s.begin(ctx, "delete", attribute.String("leaderboard.id", board), attribute.String("player.id", owner))
	defer end(&err)
	_, def, period, err := s.readArgs(ctx, board, period)
	if err != nil {
		return false, err
	}
	if err := validOwner(owner); err != nil {
		return false, s.reject("bad_owner", err)
	}
	return s.be.Delete(ctx, &def, period, owner)
}

// Count returns how many records a period holds.
func (s *Service) Count(ctx context.Context, board, period string) (_ int64, err error) {
	ctx, end := s.begin(ctx, "count", attribute.String("leaderboard.id", board))
	defer end(&err)
	_, def, period, err := s.readArgs(ctx, board, period)
	if err != nil {
		return 0, err
	}
	return s.be.Count(ctx, &def, period)
}

// Periods lists the periods of board that were written to, newest first.
func (s *Service) Periods(ctx context.Context, board string) (_ []Period, err error) {
	ctx, end := s.begin(ctx, "periods", attribute.String("leaderboard.id", board))
	defer end(&err)
	st, err := s.board(ctx, board)
	if err != nil {
		return nil, err
	}
	def := st.definition()
	ps, err := s.be.Periods(ctx, &def)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ps, func(a, b Period) int { return b.Start.Compare(a.Start) })
	return ps, nil
}

// CheckResets notes boards whose period changed since the last check and
// returns the periods that ended. The records of an ended period stay
// where they are, readable by its id: archiving is the period id moving
// on, so a reset costs nothing however large the board.
func (s *Service) CheckResets() []Period {
	now := s.now()
	s.mu.RLock()
	states := slices.Collect(maps.Values(s.boards))
	s.mu.RUnlock()
	var ended []Period
	for _, st := range states {
		if st.sched == nil {
			continue
		}
		p := st.periodAt(now)
		st.mu.Lock()
		last, id := st.seen, st.def.ID
		st.seen = p
		st.mu.Unlock()
		if last.ID != "" && last.ID != p.ID {
			s.m.resets.Inc()
			ended = append(ended, last)
			s.log.Info("leaderboard period ended", "board", id, "period", last.ID, "next", p.ID, "next_ends", p.End)
		}
	}
	return ended
}

// nextReset is the earliest end of a current period (zero: none).
func (s *Service) nextReset() time.Time {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var next time.Time
	for _, st := range s.boards {
		if st.sched == nil {
			continue
		}
		if e := st.periodAt(now).End; !e.IsZero() && (next.IsZero() || e.Before(next)) {
			next = e
		}
	}
	return next
}

// Run watches the reset schedules until ctx ends: it wakes at each reset
// (or every 30 s, also refreshing definitions other replicas changed),
// counts and logs the periods that ended.
func (s *Service) Run(ctx context.Context) {
	s.CheckResets()
	for {
		wait := 30 * time.Second
		if next := s.nextReset(); !next.IsZero() {
			wait = min(wait, max(next.Sub(s.now()), 10*time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if time.Since(s.lastReloadTime()) >= 30*time.Second {
			if err := s.reload(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("leaderboard: reloading board definitions failed", "err", err)
			}
		}
		s.CheckResets()
	}
}

func (s *Service) lastReloadTime() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastReload
}

// Close closes the backend: queued writes are committed first.
func (s *Service) Close() error { return s.be.Close() }

// reject counts a refused request by reason and returns its error.
func (s *Service) reject(reason string, err error) error {
	s.m.rejections.WithLabelValues(reason).Inc()
	return err
}

// begin opens an operation's span; the returned func ends it with the
// operation's outcome, counted and timed.
func (s *Service) begin(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, func(*error)) {
	ctx, span := s.tracer.Start(ctx, "leaderboard."+op, trace.WithAttributes(attrs...))
	start := time.Now()
	return ctx, func(errp *error) {
		err := *errp
		outcome := Outcome(err)
		s.m.ops.WithLabelValues(op, outcome).Inc()
		s.m.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			if outcome == "error" {
				span.RecordError(err)
			}
		}
		span.End()
	}
}

// Outcome names an error's class for metrics: ok, invalid_argument,
// not_found, permission_denied, failed_precondition or error.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrInvalid):
		return "invalid_argument"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrPermission):
		return "permission_denied"
	case errors.Is(err, ErrPrecondition):
		return "failed_precondition"
	}
	return "error"
}
