package leaderboard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rallyhq/rally/internal/store"
)

// Bucket is the store bucket of the embedded backend. Keys:
//
//	b/<board>                    the board's definition (JSON)
//	p/<board>/<period>           a period's bounds, once written to
//	r/<board>/<period>/<owner>   a record
const Bucket = "leaderboard"

// Embedded keeps each period's records in memory, in an Index for ranks
// and a map by owner, and makes every write durable in the store before
// acknowledging it. Periods load from the store on first use; a few per
// board stay cached (the one last written to always does).
type Embedded struct {
	st     store.Store
	commit *committer
	m      *commitMetrics
	keep   int

	mu     sync.Mutex
	boards map[string]*embBoard
}

type embBoard struct {
	mu      sync.RWMutex
	periods map[string]*embPeriod
	written string // the period last written to, never evicted
	clock   uint64
}

type embPeriod struct {
	idx       Index
	ents      entrySlab
	owners    map[string]uint32 // owner -> ref into ents
	seq       uint64
	used      uint64
	stale     bool // a commit failed: reload from the store before use
	metaSaved bool
}

// entry is one record in memory; the Index refers to it by its place in
// an entrySlab.
type entry struct {
	owner, username, metadata string
	score, sub                int64
	seq                       uint64
	submits                   uint32
	created, updated          int64 // unix ms
}

// EmbeddedOptions configures NewEmbedded.
type EmbeddedOptions struct {
	// CachedPeriods is how many periods per board stay in memory (at least
	// 1; default 3): the current one and recently read archives.
	CachedPeriods int
	Registerer    prometheus.Registerer
}

// NewEmbedded returns the embedded backend over st.
func NewEmbedded(st store.Store, opts EmbeddedOptions) *Embedded {
	if opts.CachedPeriods < 1 {
		opts.CachedPeriods = 3
	}
	m := newCommitMetrics(opts.Registerer)
	return &Embedded{st: st, m: m, keep: opts.CachedPeriods, commit: newCommitter(st, Bucket, m), boards: map[string]*embBoard{}}
}

var _ Backend = (*Embedded)(nil)

func boardKey(id string) string             { return "b/" + id }
func periodKey(board, period string) string { return "p/" + board + "/" + period }
func recordPrefix(board, period string) string {
	return "r/" + board + "/" + period + "/"
}

// SaveBoard implements Backend.
func (e *Embedded) SaveBoard(ctx context.Context, b Board) error {
	data, err := marshalBoard(b)
	if err != nil {
		return err
	}
	return e.st.Put(ctx, Bucket, boardKey(b.ID), data)
}

// Boards implements Backend.
func (e *Embedded) Boards(ctx context.Context) ([]Board, error) {
	var out []Board
	err := e.st.Scan(ctx, Bucket, "b/", func(_ string, v []byte) error {
		b, err := unmarshalBoard(v)
		if err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

// Board implements Backend.
func (e *Embedded) Board(ctx context.Context, id string) (Board, error) {
	v, err := e.st.Get(ctx, Bucket, boardKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return Board{}, fmt.Errorf("leaderboard: %w: no board %q", ErrNotFound, id)
	}
	if err != nil {
		return Board{}, err
	}
	return unmarshalBoard(v)
}

func (e *Embedded) board(id string) *embBoard {
	e.mu.Lock()
	defer e.mu.Unlock()
	bd := e.boards[id]
	if bd == nil {
		bd = &embBoard{periods: map[string]*embPeriod{}}
		e.boards[id] = bd
	}
	return bd
}

// period returns a loaded period; bd.mu must be held for writing. With
// create unset, a period that was never written to is not loaded (nil):
// reads of made-up period ids must not fill the cache.
func (e *Embedded) period(ctx context.Context, bd *embBoard, b *Board, id string, create bool) (*embPeriod, error) {
	bd.clock++
	if p := bd.periods[id]; p != nil && !p.stale {
		p.used = bd.clock
		return p, nil
	}
	if p := bd.periods[id]; p != nil {
		// A failed commit left memory ahead of the store; everything
		// queued before now must land before the store is read back.
		if err := e.commit.barrier(); err != nil {
			return nil, err
		}
		e.m.records.Sub(float64(p.idx.Len()))
		delete(bd.periods, id)
	}
	_, err := e.st.Get(ctx, Bucket, periodKey(b.ID, id))
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if !exists && !create {
		return nil, nil
	}
	p := &embPeriod{owners: map[string]uint32{}, used: bd.clock, metaSaved: exists}
	if exists {
		if err := e.load(ctx, b, id, p); err != nil {
			return nil, err
		}
	}
	bd.periods[id] = p
	e.m.records.Add(float64(p.idx.Len()))
	e.evict(bd)
	return p, nil
}

// load reads a period's records from the store and indexes them.
func (e *Embedded) load(ctx context.Context, b *Board, id string, p *embPeriod) error {
	prefix := recordPrefix(b.ID, id)
	type loaded struct {
		k   Key
		ref uint32
	}
	var items []loaded
	err := e.st.Scan(ctx, Bucket, prefix, func(k string, v []byte) error {
		ref, en := p.ents.alloc()
		if err := decodeEntry(en, strings.TrimPrefix(k, prefix), v); err != nil {
			return fmt.Errorf("leaderboard: record %s: %w", k, err)
		}
		items = append(items, loaded{keyOf(b.Sort, en.score, en.sub, en.seq), ref})
		p.owners[en.owner] = ref
		p.seq = max(p.seq, en.seq)
		return nil
	})
	if err != nil {
		return err
	}
	// Inserting in key order keeps every insert on the rightmost path.
	slices.SortFunc(items, func(a, b loaded) int { return cmpKeys(a.k, b.k) })
	for _, it := range items {
		p.idx.Insert(it.k, it.ref)
	}
	return nil
}

func cmpKeys(a, b Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// evict drops the least recently used periods past the cache size, never
// the one last written to.
func (e *Embedded) evict(bd *embBoard) {
	for len(bd.periods) > e.keep {
		victim, oldest := "", uint64(0)
		for id, p := range bd.periods {
			if id != bd.written && (victim == "" || p.used < oldest) {
				victim, oldest = id, p.used
			}
		}
		if victim == "" {
			return
		}
		e.m.records.Sub(float64(bd.periods[victim].idx.Len()))
		delete(bd.periods, victim)
	}
}

// readPeriod takes bd's read lock and returns the period (nil if it was
// never written to). The caller unlocks with bd.mu.RUnlock.
func (e *Embedded) readPeriod(ctx context.Context, b *Board, id string) (*embBoard, *embPeriod, error) {
	bd := e.board(b.ID)
	bd.mu.RLock()
	if p := bd.periods[id]; p != nil && !p.stale {
		return bd, p, nil
	}
	bd.mu.RUnlock()
	bd.mu.Lock()
	_, err := e.period(ctx, bd, b, id, false)
	bd.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	bd.mu.RLock()
	// Loaded, or still absent (never written); a concurrent eviction in
	// between only costs another load next time.
	return bd, bd.periods[id], nil
}

// Submit implements Backend.
func (e *Embedded) Submit(ctx context.Context, b *Board, per Period, ws []Write, now time.Time) ([]Result, error) {
	bd := e.board(b.ID)
	bd.mu.Lock()
	p, err := e.period(ctx, bd, b, per.ID, true)
	if err != nil {
		bd.mu.Unlock()
		return nil, err
	}
	bd.written = per.ID
	ops := make([]storeOp, 0, len(ws)+1)
	if !p.metaSaved {
		ops = append(ops, storeOp{key: periodKey(b.ID, per.ID), val: []byte(periodValue(per))})
		p.metaSaved = true
	}
	before := p.idx.Len()
	res := make([]Result, len(ws))
	prefix := recordPrefix(b.ID, per.ID)
	for i := range ws {
		en, r := p.apply(b.Sort, &ws[i], now.UnixMilli())
		res[i] = r
		if r.Err == nil {
			ops = append(ops, storeOp{key: prefix + en.owner, val: encodeEntry(en)})
		}
	}
	e.m.records.Add(float64(p.idx.Len() - before))
	bt, err := e.commit.add(ops...)
	bd.mu.Unlock()
	if err == nil {
		err = bt.wait()
	}
	if err != nil {
		bd.mu.Lock()
		p.stale = true
		bd.mu.Unlock()
		return nil, err
	}
	return res, nil
}

// apply performs one write in memory and returns the entry to persist.
func (p *embPeriod) apply(sort SortOrder, w *Write, now int64) (*entry, Result) {
	ref, had := p.owners[w.Owner]
	var en *entry
	var oldScore, oldSub int64
	if had {
		en = p.ents.get(ref)
		oldScore, oldSub = en.score, en.sub
	}
	score, sub, take, err := combine(w.Operator, sort, had, oldScore, oldSub, w.Score, w.Subscore)
	if err != nil {
		return nil, Result{Err: err}
	}
	changed := !had || score != oldScore || sub != oldSub
	if !had {
		ref, en = p.ents.alloc()
		en.owner, en.created = w.Owner, now
		p.owners[w.Owner] = ref
	}
	var rank int
	if changed {
		if had {
			p.idx.Delete(keyOf(sort, en.score, en.sub, en.seq))
		}
		p.seq++
		en.score, en.sub, en.seq = score, sub, p.seq
		rank = p.idx.Insert(keyOf(sort, score, sub, en.seq), ref)
	} else {
		rank, _ = p.idx.Rank(keyOf(sort, en.score, en.sub, en.seq))
	}
	if take {
		if w.Metadata != "" {
			en.metadata = w.Metadata
		}
		if w.Username != "" {
			en.username = w.Username
		}
		en.updated = now
	}
	en.submits++
	return en, Result{Record: en.record(int64(rank) + 1), Changed: changed}
}

func (en *entry) record(rank int64) Record {
	return Record{
		Owner: en.owner, Username: en.username, Score: en.score, Subscore: en.sub, Metadata: en.metadata,
		Rank: rank, Submits: en.submits, Seq: en.seq,
		Created: time.UnixMilli(en.created), Updated: time.UnixMilli(en.updated),
	}
}

// Top implements Backend.
func (e *Embedded) Top(ctx context.Context, b *Board, period string, after *Key, limit int) ([]Record, error) {
	bd, p, err := e.readPeriod(ctx, b, period)
	if err != nil {
		return nil, err
	}
	defer bd.mu.RUnlock()
	if p == nil {
		return nil, nil
	}
	c, r := p.idx.At(0), 0
	if after != nil {
		c, r = p.idx.After(*after)
	}
	return p.collect(c, r, limit), nil
}

func (p *embPeriod) collect(c Cursor, rank, limit int) []Record {
	out := make([]Record, 0, min(limit, 128))
	for ; len(out) < limit && c.Valid(); c = c.Next() {
		rank++
		out = append(out, p.ents.get(c.Ref()).record(int64(rank)))
	}
	return out
}

// Around implements Backend.
func (e *Embedded) Around(ctx context.Context, b *Board, period, owner string, limit int) ([]Record, error) {
	bd, p, err := e.readPeriod(ctx, b, period)
	if err != nil {
		return nil, err
	}
	defer bd.mu.RUnlock()
	var en *entry
	if p != nil {
		en = p.entry(owner)
	}
	if en == nil {
		return nil, fmt.Errorf("leaderboard: %w: %s has no record on %s in period %s", ErrNotFound, owner, b.ID, period)
	}
	r, _ := p.idx.Rank(keyOf(b.Sort, en.score, en.sub, en.seq))
	start := aroundStart(int64(r), int64(p.idx.Len()), int64(limit))
	return p.collect(p.idx.At(int(start)), int(start), limit), nil
}

// Records implements Backend.
func (e *Embedded) Records(ctx context.Context, b *Board, period string, owners []string) ([]Record, error) {
	bd, p, err := e.readPeriod(ctx, b, period)
	if err != nil {
		return nil, err
	}
	defer bd.mu.RUnlock()
	if p == nil {
		return nil, nil
	}
	out := make([]Record, 0, len(owners))
	for _, o := range owners {
		if en := p.entry(o); en != nil {
			r, _ := p.idx.Rank(keyOf(b.Sort, en.score, en.sub, en.seq))
			out = append(out, en.record(int64(r)+1))
		}
	}
	return out, nil
}

// Delete implements Backend.
func (e *Embedded) Delete(ctx context.Context, b *Board, period, owner string) (bool, error) {
	bd := e.board(b.ID)
	bd.mu.Lock()
	p, err := e.period(ctx, bd, b, period, false)
	if err != nil || p == nil {
		bd.mu.Unlock()
		return false, err
	}
	ref, ok := p.owners[owner]
	if !ok {
		bd.mu.Unlock()
		return false, nil
	}
	en := p.ents.get(ref)
	p.idx.Delete(keyOf(b.Sort, en.score, en.sub, en.seq))
	delete(p.owners, owner)
	p.ents.release(ref)
	e.m.records.Dec()
	bt, err := e.commit.add(storeOp{key: recordPrefix(b.ID, period) + owner, del: true})
	bd.mu.Unlock()
	if err == nil {
		err = bt.wait()
	}
	if err != nil {
		bd.mu.Lock()
		p.stale = true
		bd.mu.Unlock()
		return false, err
	}
	return true, nil
}

// Count implements Backend.
func (e *Embedded) Count(ctx context.Context, b *Board, period string) (int64, error) {
	bd, p, err := e.readPeriod(ctx, b, period)
	if err != nil {
		return 0, err
	}
	defer bd.mu.RUnlock()
	if p == nil {
		return 0, nil
	}
	return int64(p.idx.Len()), nil
}

// Periods implements Backend.
func (e *Embedded) Periods(ctx context.Context, b *Board) ([]Period, error) {
	// Periods first written by writes still in the queue are listed too.
	if err := e.commit.barrier(); err != nil {
		return nil, err
	}
	prefix := "p/" + b.ID + "/"
	var out []Period
	err := e.st.Scan(ctx, Bucket, prefix, func(k string, v []byte) error {
		p, err := parsePeriodValue(strings.TrimPrefix(k, prefix), string(v))
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// Close implements Backend: queued writes are committed first.
func (e *Embedded) Close() error {
	e.commit.close()
	return nil
}

const entryVersion = 1

func encodeEntry(en *entry) []byte {
	b := make([]byte, 0, 40+len(en.username)+len(en.metadata))
	b = append(b, entryVersion)
	b = binary.AppendVarint(b, en.score)
	b = binary.AppendVarint(b, en.sub)
	b = binary.AppendUvarint(b, en.seq)
	b = binary.AppendUvarint(b, uint64(en.submits))
	b = binary.AppendVarint(b, en.created)
	b = binary.AppendVarint(b, en.updated)
	b = binary.AppendUvarint(b, uint64(len(en.username)))
	b = append(b, en.username...)
	return append(b, en.metadata...)
}

var errBadEntry = errors.New("malformed stored record")

func decodeEntry(en *entry, owner string, b []byte) error {
	if len(b) == 0 || b[0] != entryVersion {
		return errBadEntry
	}
	b = b[1:]
	en.owner = owner
	ok := true
	varint := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	uvarint := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	en.score, en.sub = varint(), varint()
	en.seq = uvarint()
	en.submits = uint32(uvarint())
	en.created, en.updated = varint(), varint()
	ulen := uvarint()
	if !ok || ulen > uint64(len(b)) {
		return errBadEntry
	}
	en.username, en.metadata = string(b[:ulen]), string(b[ulen:])
	return nil
}

// entry returns owner's entry, or nil.
func (p *embPeriod) entry(owner string) *entry {
	ref, ok := p.owners[owner]
	if !ok {
		return nil
	}
	return p.ents.get(ref)
}

// entrySlab allocates entries in chunks that never move, referred to by
// number: the Index carries numbers, not pointers.
type entrySlab struct {
	chunks [][]entry
	free   []uint32
	next   uint32
}

const slabChunk = 4096

func (s *entrySlab) alloc() (uint32, *entry) {
	if n := len(s.free); n > 0 {
		ref := s.free[n-1]
		s.free = s.free[:n-1]
		return ref, s.get(ref)
	}
	ref := s.next
	if int(ref/slabChunk) == len(s.chunks) {
		s.chunks = append(s.chunks, make([]entry, slabChunk))
	}
	s.next++
	return ref, s.get(ref)
}

func (s *entrySlab) get(ref uint32) *entry { return &s.chunks[ref/slabChunk][ref%slabChunk] }

func (s *entrySlab) release(ref uint32) {
	*s.get(ref) = entry{}
	s.free = append(s.free, ref)
}

// MemoryBoard is one period of one board in memory, with no durability:
// the embedded backend's core (the Index and the owner map), exported so
// that benchmarks can measure it alone. Not safe for concurrent use.
type MemoryBoard struct {
	sort SortOrder
	p    embPeriod
}

// NewMemoryBoard returns an empty board sorted by sort.
func NewMemoryBoard(sort SortOrder) *MemoryBoard {
	return &MemoryBoard{sort: sort, p: embPeriod{owners: map[string]uint32{}}}
}

// Submit applies one write (its Operator must be set) and returns its
// result, rank included.
func (m *MemoryBoard) Submit(w Write, now time.Time) Result {
	_, r := m.p.apply(m.sort, &w, now.UnixMilli())
	return r
}

// Rank returns owner's 1-based rank, or 0 without a record.
func (m *MemoryBoard) Rank(owner string) int64 {
	en := m.p.entry(owner)
	if en == nil {
		return 0
	}
	r, _ := m.p.idx.Rank(keyOf(m.sort, en.score, en.sub, en.seq))
	return int64(r) + 1
}

// Len returns the number of records.
func (m *MemoryBoard) Len() int { return m.p.idx.Len() }
