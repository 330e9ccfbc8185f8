package leaderboard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps boards in Redis so that every replica serves the same
// rankings. Per board and period:
//
//	<prefix>{<board>}:<period>:z   sorted set, every score 0, members ordered
//	                               by bytes: enc(A) enc(B) seq owner
//	<prefix>{<board>}:<period>:h   hash owner -> the record
//	<prefix>{<board>}:<period>:n   the period's seq counter
//	<prefix>{<board>}:periods      hash period -> "start_ms,end_ms"
//	<prefix>boards                 hash board -> definition (JSON)
//
// The order is kept in the member, not the sorted-set score: enc writes an
// integer within ±(2^53-1) as 17 bytes whose byte order is numeric order,
// so ties of the whole (score, subscore, seq) key are impossible and the
// order is exact over the full range, which a float64 score could not hold.
// Operators run in Lua scripts, so a read-modify-write is atomic; a board's
// keys share one hash tag, so scripts also work on Redis Cluster.
type Redis struct {
	c      redis.UniversalClient
	prefix string

	mu     sync.Mutex
	queues map[string]*submitQueue // by board and period
}

// NewRedis returns a backend on c with keys under prefix (e.g. "rally:lb:").
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	return &Redis{c: c, prefix: prefix, queues: map[string]*submitQueue{}}
}

var _ Backend = (*Redis)(nil)

// memberHead is the length of the ordering part of a member.
const memberHead = 17 + 17 + 16

// encOrdered writes v (within ±MaxScore) so that byte order is numeric
// order: a sign digit, then 16 decimal digits of v or of v + 2^53.
func encOrdered(v int64) string {
	if v < 0 {
		return fmt.Sprintf("0%016d", v+1<<53)
	}
	return fmt.Sprintf("1%016d", v)
}

// memberPrefix is the ordering part of the member of key k.
func memberPrefix(k Key) string {
	return encOrdered(k.A) + encOrdered(k.B) + fmt.Sprintf("%016d", k.Seq)
}

func (r *Redis) boardTag(board string) string { return r.prefix + "{" + board + "}:" }

func (r *Redis) keys(board, period string) []string {
	base := r.boardTag(board) + period + ":"
	return []string{base + "z", base + "h", base + "n"}
}

// luaLib is shared by the scripts; it mirrors encOrdered, combine and the
// record value format.
const luaLib = `
local MAXS = 9007199254740991
local TWO53 = 9007199254740992
local function enc(v)
  if v < 0 then return string.format('0%016.0f', v + TWO53) end
  return string.format('1%016.0f', v)
end
local function member(desc, score, sub, seq, owner)
  if desc then score, sub = 0 - score, 0 - sub end
  return enc(score) .. enc(sub) .. string.format('%016.0f', seq) .. owner
end
local function parse(v)
  local s, sub, seq, cnt, cr, up, ul, pos = string.match(v, '^(%-?%d+),(%-?%d+),(%d+),(%d+),(%-?%d+),(%-?%d+),(%d+):()')
  ul = tonumber(ul)
  return tonumber(s), tonumber(sub), tonumber(seq), tonumber(cnt), cr, up, string.sub(v, pos, pos + ul - 1), string.sub(v, pos + ul)
end
local function num(v) return string.format('%.0f', v) end
local function value(score, sub, seq, cnt, cr, up, uname, meta)
  return num(score) .. ',' .. num(sub) .. ',' .. num(seq) .. ',' .. num(cnt) .. ',' .. cr .. ',' .. up .. ',' .. #uname .. ':' .. uname .. meta
end
local function pairsOf(out, ms)
  for _, m in ipairs(ms) do
    local owner = string.sub(m, 51)
    out[#out + 1] = owner
    out[#out + 1] = redis.call('HGET', KEYS[2], owner)
  end
  return out
end
`

// submitScript: KEYS z h n periods; ARGV desc period_id period_value now,
// then owner username op score sub metadata per write.
var submitScript = redis.NewScript(luaLib + `
local desc = ARGV[1] == '1'
redis.call('HSETNX', KEYS[4], ARGV[2], ARGV[3])
local now = ARGV[4]
local out = {}
-- One counter step per batch; a write that does not move leaves a gap.
local nextSeq = redis.call('INCRBY', KEYS[3], (#ARGV - 4) / 6) - (#ARGV - 4) / 6
for o = 4, #ARGV - 1, 6 do
  local owner, uname, op, meta = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 6]
  local score, sub = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
  local old = redis.call('HGET', KEYS[2], owner)
  local ps, psub, pseq, cnt, cr, up, puname, pmeta = 0, 0, 0, 0, now, now, '', ''
  if old then ps, psub, pseq, cnt, cr, up, puname, pmeta = parse(old) end
  local ns, nsub, take = score, sub, true
  if op == 'incr' then
    ns, nsub = ps + score, psub + sub
  elseif op == 'decr' then
    ns, nsub = ps - score, psub - sub
  elseif op == 'best' and old then
    local better
    if desc then better = score > ps or (score == ps and sub > psub)
    else better = score < ps or (score == ps and sub < psub) end
    if not better then ns, nsub, take = ps, psub, false end
  end
  if ns > MAXS or ns < -MAXS or nsub > MAXS or nsub < -MAXS then
    out[#out + 1] = {-1}
  else
    local changed = (not old) or ns ~= ps or nsub ~= psub
    local seq = pseq
    nextSeq = nextSeq + 1
    if changed then
      seq = nextSeq
      if old then redis.call('ZREM', KEYS[1], member(desc, ps, psub, pseq, owner)) end
    end
    local m = member(desc, ns, nsub, seq, owner)
    if changed then redis.call('ZADD', KEYS[1], 0, m) end
    if take then
      if meta ~= '' then pmeta = meta end
      if uname ~= '' then puname = uname end
      up = now
    end
    local v = value(ns, nsub, seq, cnt + 1, cr, up, puname, pmeta)
    redis.call('HSET', KEYS[2], owner, v)
    out[#out + 1] = {changed and 1 or 0, redis.call('ZRANK', KEYS[1], m), v}
  end
end
return out
`)

// topScript: KEYS z h; ARGV lex_min limit -> rank0, owner, value, ...
var topScript = redis.NewScript(luaLib + `
local ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
if #ms == 0 then return {} end
return pairsOf({redis.call('ZRANK', KEYS[1], ms[1])}, ms)
`)

// aroundScript: KEYS z h; ARGV desc owner limit -> start, owner, value, ...
var aroundScript = redis.NewScript(luaLib + `
local v = redis.call('HGET', KEYS[2], ARGV[2])
if not v then return false end
local s, sub, seq = parse(v)
local r = redis.call('ZRANK', KEYS[1], member(ARGV[1] == '1', s, sub, seq, ARGV[2]))
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[3])
local start = r - math.floor((limit - 1) / 2)
if start + limit > n then start = n - limit end
if start < 0 then start = 0 end
return pairsOf({start}, redis.call('ZRANGE', KEYS[1], start, start + limit - 1))
`)

// recordsScript: KEYS z h; ARGV desc owners... -> owner, rank0, value, ...
var recordsScript = redis.NewScript(luaLib + `
local desc = ARGV[1] == '1'
local out = {}
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if v then
    local s, sub, seq = parse(v)
    out[#out + 1] = ARGV[i]
    out[#out + 1] = redis.call('ZRANK', KEYS[1], member(desc, s, sub, seq, ARGV[i]))
    out[#out + 1] = v
  end
end
return out
`)

// deleteScript: KEYS z h; ARGV desc owner -> 1 if deleted.
var deleteScript = redis.NewScript(luaLib + `
local v = redis.call('HGET', KEYS[2], ARGV[2])
if not v then return 0 end
local s, sub, seq = parse(v)
redis.call('ZREM', KEYS[1], member(ARGV[1] == '1', s, sub, seq, ARGV[2]))
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
`)

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// SaveBoard implements Backend.
func (r *Redis) SaveBoard(ctx context.Context, b Board) error {
	data, err := marshalBoard(b)
	if err != nil {
		return err
	}
	return r.c.HSet(ctx, r.prefix+"boards", b.ID, data).Err()
}

// Boards implements Backend.
func (r *Redis) Boards(ctx context.Context) ([]Board, error) {
	all, err := r.c.HGetAll(ctx, r.prefix+"boards").Result()
	if err != nil {
		return nil, err
	}
	out := make([]Board, 0, len(all))
	for _, v := range all {
		b, err := unmarshalBoard([]byte(v))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Board implements Backend.
func (r *Redis) Board(ctx context.Context, id string) (Board, error) {
	v, err := r.c.HGet(ctx, r.prefix+"boards", id).Bytes()
	if errors.Is(err, redis.Nil) {
		return Board{}, fmt.Errorf("leaderboard: %w: no board %q", ErrNotFound, id)
	}
	if err != nil {
		return Board{}, err
	}
	return unmarshalBoard(v)
}

// Submit implements Backend. Concurrent submits to one board and period
// share script calls: while calls run, the writes that arrive queue up,
// and the next call takes them all (up to maxScriptWrites), so under load
// a round trip and a script start are paid per batch, not per write. A few
// calls stay in flight at once, so the client's work and the network
// overlap Redis's.
func (r *Redis) Submit(ctx context.Context, b *Board, p Period, ws []Write, now time.Time) ([]Result, error) {
	key := b.ID + "\x00" + p.ID
	r.mu.Lock()
	q := r.queues[key]
	if q == nil {
		q = &submitQueue{}
		r.queues[key] = q
	}
	c := &submitCall{ws: ws, now: now, done: make(chan struct{}), lead: make(chan struct{})}
	q.pending = append(q.pending, c)
	leader := q.running < maxScriptsInFlight
	if leader {
		q.running++
	}
	r.mu.Unlock()
	if !leader {
		select {
		case <-c.done:
		case <-c.lead:
		}
		// A call handed the lead must use it, even if another batch took
		// its writes meanwhile, or the queue would stall.
		select {
		case <-c.lead:
			leader = true
		default:
		}
		if !leader {
			return c.res, c.err
		}
	}
	r.mu.Lock()
	batch, n := q.take()
	r.mu.Unlock()
	if len(batch) > 0 {
		// The batch belongs to several callers: one caller's cancellation
		// must not fail the others'.
		runCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		r.run(runCtx, b, p, batch, n)
		cancel()
	}
	r.mu.Lock()
	if next := q.unled(); next != nil {
		next.led = true
		close(next.lead) // hand this slot to the next batch
	} else if q.running--; q.running == 0 {
		delete(r.queues, key)
	}
	r.mu.Unlock()
	<-c.done // this call's writes may be in another batch
	return c.res, c.err
}

// maxScriptsInFlight is how many script calls one board and period may
// have running at once.
const maxScriptsInFlight = 4

// maxScriptWrites bounds one script call, which blocks Redis while it runs.
const maxScriptWrites = 512

type submitQueue struct {
	running int // calls in flight, each with a leader
	pending []*submitCall
}

type submitCall struct {
	ws   []Write
	now  time.Time
	res  []Result
	err  error
	done chan struct{} // closed with res and err set
	lead chan struct{} // closed when this call is to run the next batch
	led  bool          // lead was closed
}

// unled returns the first waiting call not yet handed a slot.
func (q *submitQueue) unled() *submitCall {
	for _, c := range q.pending {
		if !c.led {
			return c
		}
	}
	return nil
}

// take removes whole calls from the queue up to maxScriptWrites writes
// (at least one call, however large, if any is waiting).
func (q *submitQueue) take() ([]*submitCall, int) {
	n, i := 0, 0
	for ; i < len(q.pending); i++ {
		if i > 0 && n+len(q.pending[i].ws) > maxScriptWrites {
			break
		}
		n += len(q.pending[i].ws)
	}
	batch := q.pending[:i:i]
	q.pending = q.pending[i:]
	return batch, n
}

// run applies a batch of calls in one script call and hands each call its
// results.
func (r *Redis) run(ctx context.Context, b *Board, p Period, batch []*submitCall, n int) {
	finish := func(err error) {
		for _, c := range batch {
			c.err = err
			close(c.done)
		}
	}
	keys := append(r.keys(b.ID, p.ID), r.boardTag(b.ID)+"periods")
	args := make([]any, 0, 4+6*n)
	now := batch[len(batch)-1].now
	args = append(args, flag(b.Sort == Desc), p.ID, periodValue(p), strconv.FormatInt(now.UnixMilli(), 10))
	for _, c := range batch {
		for _, w := range c.ws {
			args = append(args, w.Owner, w.Username, w.Operator.String(),
				strconv.FormatInt(w.Score, 10), strconv.FormatInt(w.Subscore, 10), w.Metadata)
		}
	}
	reply, err := submitScript.Run(ctx, r.c, keys, args...).Slice()
	if err != nil {
		finish(err)
		return
	}
	if len(reply) != n {
		finish(fmt.Errorf("leaderboard: redis answered %d results for %d writes", len(reply), n))
		return
	}
	for _, c := range batch {
		c.res = make([]Result, len(c.ws))
		for i := range c.ws {
			c.res[i], err = submitResult(c.ws[i].Owner, reply[0])
			reply = reply[1:]
			if err != nil {
				c.err = err
			}
		}
		if c.err != nil {
			c.res = nil
		}
		close(c.done)
	}
}

func submitResult(owner string, x any) (Result, error) {
	row, _ := x.([]any)
	if len(row) == 1 {
		return Result{Err: errOutOfRange}, nil
	}
	if len(row) != 3 {
		return Result{}, fmt.Errorf("leaderboard: unexpected redis reply %v", x)
	}
	changed, _ := row[0].(int64)
	rank, _ := row[1].(int64)
	v, _ := row[2].(string)
	rec, err := parseValue(owner, v)
	if err != nil {
		return Result{}, err
	}
	rec.Rank = rank + 1
	return Result{Record: rec, Changed: changed == 1}, nil
}

// parseValue reads the record format of the scripts:
// score,sub,seq,submits,created_ms,updated_ms,len(username):username metadata
func parseValue(owner, v string) (Record, error) {
	bad := fmt.Errorf("leaderboard: malformed record of %s in redis", owner)
	var nums [7]int64
	for i := range nums {
		sep := byte(',')
		if i == 6 {
			sep = ':'
		}
		j := strings.IndexByte(v, sep)
		if j < 0 {
			return Record{}, bad
		}
		n, err := strconv.ParseInt(v[:j], 10, 64)
		if err != nil {
			return Record{}, bad
		}
		nums[i], v = n, v[j+1:]
	}
	ul := nums[6]
	if ul < 0 || ul > int64(len(v)) || nums[2] < 0 || nums[3] < 0 {
		return Record{}, bad
	}
	return Record{
		Owner: owner, Score: nums[0], Subscore: nums[1], Seq: uint64(nums[2]), Submits: uint32(nums[3]),
		Created: time.UnixMilli(nums[4]), Updated: time.UnixMilli(nums[5]),
		Username: v[:ul], Metadata: v[ul:],
	}, nil
}

// pairs decodes owner, value, ... from a script reply, ranks from first.
func pairs(reply []any, first int64) ([]Record, error) {
	out := make([]Record, 0, len(reply)/2)
	for i := 0; i+1 < len(reply); i += 2 {
		owner, _ := reply[i].(string)
		v, ok := reply[i+1].(string)
		if !ok {
			// The hash lost a member the set still holds: cannot happen
			// through the scripts; say so rather than show a blank.
			return nil, fmt.Errorf("leaderboard: redis set and hash disagree on %s", owner)
		}
		rec, err := parseValue(owner, v)
		if err != nil {
			return nil, err
		}
		rec.Rank = first + int64(len(out)) + 1
		out = append(out, rec)
	}
	return out, nil
}

// Top implements Backend.
func (r *Redis) Top(ctx context.Context, b *Board, period string, after *Key, limit int) ([]Record, error) {
	from := "-"
	if after != nil {
		// Every member of key *after starts with its prefix and continues
		// with an owner id, which is UTF-8 and so never holds 0xff.
		from = "(" + memberPrefix(*after) + "\xff"
	}
	k := r.keys(b.ID, period)
	reply, err := topScript.Run(ctx, r.c, k[:2], from, limit).Slice()
	if err != nil || len(reply) == 0 {
		return nil, err
	}
	first, _ := reply[0].(int64)
	return pairs(reply[1:], first)
}

// Around implements Backend.
func (r *Redis) Around(ctx context.Context, b *Board, period, owner string, limit int) ([]Record, error) {
	k := r.keys(b.ID, period)
	reply, err := aroundScript.Run(ctx, r.c, k[:2], flag(b.Sort == Desc), owner, limit).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("leaderboard: %w: %s has no record on %s in period %s", ErrNotFound, owner, b.ID, period)
	}
	if err != nil || len(reply) == 0 {
		return nil, err
	}
	first, _ := reply[0].(int64)
	return pairs(reply[1:], first)
}

// Records implements Backend.
func (r *Redis) Records(ctx context.Context, b *Board, period string, owners []string) ([]Record, error) {
	k := r.keys(b.ID, period)
	args := make([]any, 0, 1+len(owners))
	args = append(args, flag(b.Sort == Desc))
	for _, o := range owners {
		args = append(args, o)
	}
	reply, err := recordsScript.Run(ctx, r.c, k[:2], args...).Slice()
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(reply)/3)
	for i := 0; i+2 < len(reply); i += 3 {
		owner, _ := reply[i].(string)
		rank, _ := reply[i+1].(int64)
		v, _ := reply[i+2].(string)
		rec, err := parseValue(owner, v)
		if err != nil {
			return nil, err
		}
		rec.Rank = rank + 1
		out = append(out, rec)
	}
	return out, nil
}

// Delete implements Backend.
func (r *Redis) Delete(ctx context.Context, b *Board, period, owner string) (bool, error) {
	k := r.keys(b.ID, period)
	n, err := deleteScript.Run(ctx, r.c, k[:2], flag(b.Sort == Desc), owner).Int()
	return n == 1, err
}

// Count implements Backend.
func (r *Redis) Count(ctx context.Context, b *Board, period string) (int64, error) {
	return r.c.ZCard(ctx, r.keys(b.ID, period)[0]).Result()
}

// Periods implements Backend.
func (r *Redis) Periods(ctx context.Context, b *Board) ([]Period, error) {
	all, err := r.c.HGetAll(ctx, r.boardTag(b.ID)+"periods").Result()
	if err != nil {
		return nil, err
	}
	out := make([]Period, 0, len(all))
	for id, v := range all {
		p, err := parsePeriodValue(id, v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Close implements Backend; the client belongs to the caller.
func (r *Redis) Close() error { return nil }
