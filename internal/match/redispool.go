package match

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrTicketExists is returned by RedisPool.Add for an id that is already
// stored (waiting or claimed): overwriting a claimed record would put the
// ticket back in the pool while its match goes on.
var ErrTicketExists = errors.New("match: ticket already exists")

// redisRecordTTL bounds how long a record or index outlives its last write,
// so tickets of a replica that crashed mid-match do not stay forever.
const redisRecordTTL = time.Hour

// RedisPool is a Pool in Redis, shared by every Rally replica that uses the
// same prefix. Each step that reads and then changes a ticket's state runs
// as one Lua script, so replicas never both claim a ticket.
//
// Keys, for prefix P (such as "rally:match:"):
//
//	P t:<id>           hash: s (waiting|claimed), m (match id), p (pool key),
//	                   r (rating), c (created, unix ms), lon/lat (if Geo),
//	                   j (the ticket as JSON)
//	P p:<pool>:r       sorted set of waiting ids by rating
//	P p:<pool>:c       sorted set of waiting ids by creation time (unix ms)
//	P p:<pool>:g       geo set of waiting ids that have a position
//	P pools            set of pool keys that have waiting tickets
//
// Every write sets a TTL of an hour on what it touches. The index sets are
// refreshed whenever a member is added, so they outlive their members'
// records; members whose record expired are dropped lazily by reads.
//
// The scripts touch keys they derive from the prefix, so on Redis Cluster
// the prefix must hold a hash tag, such as "{rally:match}:", to keep every
// key in one slot.
//
// Beyond Pool it answers GeoNear; the engine finds it with a type assertion:
//
//	if g, ok := pool.(interface {
//		GeoNear(ctx context.Context, poolKey string, lat, lon, radiusKM float64, limit int) ([]*Ticket, error)
//	}); ok {
//		...
//	}
type RedisPool struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
}

var _ Pool = (*RedisPool)(nil)

// NewRedisPool returns a pool whose keys start with prefix.
func NewRedisPool(client redis.UniversalClient, prefix string) *RedisPool {
	return &RedisPool{client: client, prefix: prefix, ttl: redisRecordTTL}
}

// Lua shared by the scripts. Keys are built from the prefix (ARGV[1]) in
// the script because the pool key of a ticket is only known once its record
// is read.
const redisLuaCommon = `
local pre = ARGV[1]

local function unindex(pk, id)
  local base = pre .. 'p:' .. pk .. ':'
  redis.call('ZREM', base .. 'r', id)
  redis.call('ZREM', base .. 'c', id)
  redis.call('ZREM', base .. 'g', id)
  if redis.call('EXISTS', base .. 'c') == 0 then
    redis.call('SREM', pre .. 'pools', pk)
  end
end

local function index(pk, id, r, c, lon, lat, ttl)
  local base = pre .. 'p:' .. pk .. ':'
  if lon and lon ~= '' then
    redis.call('GEOADD', base .. 'g', lon, lat, id)
    redis.call('PEXPIRE', base .. 'g', ttl)
  end
  redis.call('ZADD', base .. 'r', r, id)
  redis.call('ZADD', base .. 'c', c, id)
  redis.call('SADD', pre .. 'pools', pk)
  redis.call('PEXPIRE', base .. 'r', ttl)
  redis.call('PEXPIRE', base .. 'c', ttl)
  redis.call('PEXPIRE', pre .. 'pools', ttl)
end

-- collect appends the JSON of ids that are waiting in pool pk to out, up
-- to limit, and drops from the index the ids that are not; it returns how
-- many it dropped, so the caller can query again for a full answer.
local function collect(pk, ids, limit, out)
  local stale = 0
  for _, id in ipairs(ids) do
    if #out >= limit then break end
    local rec = redis.call('HMGET', pre .. 't:' .. id, 's', 'p', 'j')
    if rec[1] == 'waiting' and rec[2] == pk then
      out[#out + 1] = rec[3]
    else
      unindex(pk, id)
      stale = stale + 1
    end
  end
  return stale
end
`

// KEYS[1] record; ARGV: prefix, id, pool key, rating, created ms, json,
// ttl ms, lon, lat. GEOADD, the only command that may refuse its input,
// goes first so a refusal leaves nothing half written.
var redisAddScript = redis.NewScript(redisLuaCommon + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local id, pk, r, c, j, ttl, lon, lat = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
index(pk, id, r, c, lon, lat, ttl)
if lon ~= '' then
  redis.call('HSET', KEYS[1], 's', 'waiting', 'p', pk, 'r', r, 'c', c, 'j', j, 'lon', lon, 'lat', lat)
else
  redis.call('HSET', KEYS[1], 's', 'waiting', 'p', pk, 'r', r, 'c', c, 'j', j)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`)

// KEYS[1] record; ARGV: prefix, id.
var redisRemoveScript = redis.NewScript(redisLuaCommon + `
local rec = redis.call('HMGET', KEYS[1], 's', 'p')
if rec[1] ~= 'waiting' then return 0 end
unindex(rec[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
`)

// KEYS: records; ARGV: prefix, match id, ttl ms, ids. Every record is
// checked before any is changed: all or none.
var redisClaimScript = redis.NewScript(redisLuaCommon + `
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 's') ~= 'waiting' then return 0 end
end
for i = 1, #KEYS do
  local pk = redis.call('HGET', KEYS[i], 'p')
  redis.call('HSET', KEYS[i], 's', 'claimed', 'm', ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  unindex(pk, ARGV[3 + i])
end
return 1
`)

// KEYS: records; ARGV: prefix, ttl ms, ids. Only claimed records change.
var redisRequeueScript = redis.NewScript(redisLuaCommon + `
for i = 1, #KEYS do
  local rec = redis.call('HMGET', KEYS[i], 's', 'p', 'r', 'c', 'lon', 'lat')
  if rec[1] == 'claimed' then
    redis.call('HSET', KEYS[i], 's', 'waiting')
    redis.call('HDEL', KEYS[i], 'm')
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    index(rec[2], ARGV[2 + i], rec[3], rec[4], rec[5], rec[6], ARGV[2])
  end
end
return 0
`)

// KEYS: records.
var redisFinishScript = redis.NewScript(`
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 's') == 'claimed' then
    redis.call('DEL', KEYS[i])
  end
end
return 0
`)

// Reads retry when they dropped stale ids so the answer is full, a bounded
// number of times so one call never scans a huge backlog of expired ids.
const redisLuaRead = `
for attempt = 1, 8 do
  local out = {}
  local stale = collect(ARGV[2], query(), limit, out)
  if stale == 0 or #out >= limit or attempt == 8 then return out end
end
`

// KEYS[1] creation set; ARGV: prefix, pool key, limit.
var redisOldestScript = redis.NewScript(redisLuaCommon + `
local limit = tonumber(ARGV[3])
local function query()
  return redis.call('ZRANGE', KEYS[1], 0, limit - 1)
end
` + redisLuaRead)

// KEYS[1] rating set; ARGV: prefix, pool key, limit, rating, low, high.
// Walks up from the rating and down from just below it, each bounded by
// the window and the limit, and merges the two nearest first.
var redisNearScript = redis.NewScript(redisLuaCommon + `
local limit = tonumber(ARGV[3])
local rating = tonumber(ARGV[4])
local function query()
  local up = redis.call('ZRANGE', KEYS[1], ARGV[4], ARGV[6], 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
  local down = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[4], ARGV[5], 'BYSCORE', 'REV', 'LIMIT', 0, limit, 'WITHSCORES')
  local ids = {}
  local u, d = 1, 1
  while #ids < limit and (u <= #up or d <= #down) do
    local du = math.huge
    local dd = math.huge
    if u <= #up then du = tonumber(up[u + 1]) - rating end
    if d <= #down then dd = rating - tonumber(down[d + 1]) end
    if du <= dd then
      ids[#ids + 1] = up[u]
      u = u + 2
    else
      ids[#ids + 1] = down[d]
      d = d + 2
    end
  end
  return ids
end
` + redisLuaRead)

// KEYS[1] geo set; ARGV: prefix, pool key, limit, lon, lat, radius km.
var redisGeoNearScript = redis.NewScript(redisLuaCommon + `
local limit = tonumber(ARGV[3])
local function query()
  return redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[4], ARGV[5], 'BYRADIUS', ARGV[6], 'km', 'ASC', 'COUNT', limit)
end
` + redisLuaRead)

func (p *RedisPool) recordKey(id string) string { return p.prefix + "t:" + id }

func (p *RedisPool) poolKey(pool, set string) string {
	return p.prefix + "p:" + pool + ":" + set
}

func (p *RedisPool) ttlMS() string { return strconv.FormatInt(p.ttl.Milliseconds(), 10) }

func redisFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// GEOADD accepts latitudes within the Web Mercator range only.
const redisMaxLat = 85.05112878

// Add stores a waiting ticket; it returns ErrTicketExists if the id is
// already stored.
func (p *RedisPool) Add(ctx context.Context, t *Ticket) error {
	if t.ID == "" {
		return errors.New("match: ticket without id")
	}
	if math.IsNaN(t.Rating) || math.IsInf(t.Rating, 0) {
		return fmt.Errorf("match: ticket %s: rating %v", t.ID, t.Rating)
	}
	var lon, lat string
	if g := t.Geo; g != nil {
		if !(g.Lat >= -redisMaxLat && g.Lat <= redisMaxLat && g.Lon >= -180 && g.Lon <= 180) {
			return fmt.Errorf("match: ticket %s: position %v,%v out of range", t.ID, g.Lat, g.Lon)
		}
		lon, lat = redisFloat(g.Lon), redisFloat(g.Lat)
	}
	j, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("match: ticket %s: %w", t.ID, err)
	}
	n, err := redisAddScript.Run(ctx, p.client, []string{p.recordKey(t.ID)},
		p.prefix, t.ID, t.PoolKey, redisFloat(t.Rating), t.Created.UnixMilli(), j, p.ttlMS(), lon, lat).Int()
	if err != nil {
		return fmt.Errorf("match: add %s: %w", t.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrTicketExists, t.ID)
	}
	return nil
}

// Remove deletes a waiting ticket and reports whether it was waiting.
func (p *RedisPool) Remove(ctx context.Context, id string) (bool, error) {
	n, err := redisRemoveScript.Run(ctx, p.client, []string{p.recordKey(id)}, p.prefix, id).Int()
	if err != nil {
		return false, fmt.Errorf("match: remove %s: %w", id, err)
	}
	return n == 1, nil
}

// Keys lists the pool keys that have waiting tickets, sorted.
func (p *RedisPool) Keys(ctx context.Context) ([]string, error) {
	keys, err := p.client.SMembers(ctx, p.prefix+"pools").Result()
	if err != nil {
		return nil, fmt.Errorf("match: pool keys: %w", err)
	}
	sort.Strings(keys)
	return keys, nil
}

// Oldest returns up to limit waiting tickets of a pool, oldest first.
func (p *RedisPool) Oldest(ctx context.Context, poolKey string, limit int) ([]*Ticket, error) {
	if limit <= 0 {
		return nil, nil
	}
	return p.read(ctx, redisOldestScript, p.poolKey(poolKey, "c"), poolKey, limit)
}

// Near returns up to limit waiting tickets of a pool rated within
// [rating-window, rating+window], nearest first; of two equally near, the
// higher rated comes first.
func (p *RedisPool) Near(ctx context.Context, poolKey string, rating, window float64, limit int) ([]*Ticket, error) {
	if math.IsNaN(rating) || math.IsNaN(window) {
		return nil, fmt.Errorf("match: near %v±%v", rating, window)
	}
	if limit <= 0 || window < 0 {
		return nil, nil
	}
	return p.read(ctx, redisNearScript, p.poolKey(poolKey, "r"), poolKey, limit,
		redisFloat(rating), redisFloat(rating-window), redisFloat(rating+window))
}

// NearMany answers several Near queries with one pipelined round trip.
func (p *RedisPool) NearMany(ctx context.Context, poolKey string, qs []NearQuery) ([][]*Ticket, error) {
	out := make([][]*Ticket, len(qs))
	for attempt := 0; ; attempt++ {
		pipe := p.client.Pipeline()
		cmds := make([]*redis.Cmd, len(qs))
		key := p.poolKey(poolKey, "r")
		for i, q := range qs {
			if math.IsNaN(q.Rating) || math.IsNaN(q.Window) || q.Window < 0 || q.Limit <= 0 {
				return nil, fmt.Errorf("match: near %v±%v", q.Rating, q.Window)
			}
			cmds[i] = redisNearScript.EvalSha(ctx, pipe, []string{key}, p.prefix, poolKey, min(q.Limit, redisMaxRead),
				redisFloat(q.Rating), redisFloat(q.Rating-q.Window), redisFloat(q.Rating+q.Window))
		}
		_, err := pipe.Exec(ctx)
		if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server: load the script, then pipeline.
			if err := redisNearScript.Load(ctx, p.client).Err(); err != nil {
				return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
		}
		for i, c := range cmds {
			recs, err := c.StringSlice()
			if err != nil {
				return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
			}
			ts := make([]*Ticket, 0, len(recs))
			for _, r := range recs {
				t := new(Ticket)
				if err := json.Unmarshal([]byte(r), t); err != nil {
					return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
				}
				ts = append(ts, t)
			}
			out[i] = ts
		}
		return out, nil
	}
}

// GeoNear returns up to limit waiting tickets of a pool whose position is
// within radiusKM of lat, lon, nearest first. Tickets without a position
// are never returned. It is not part of Pool: see RedisPool.
func (p *RedisPool) GeoNear(ctx context.Context, poolKey string, lat, lon, radiusKM float64, limit int) ([]*Ticket, error) {
	if limit <= 0 || !(radiusKM >= 0) {
		return nil, nil
	}
	return p.read(ctx, redisGeoNearScript, p.poolKey(poolKey, "g"), poolKey, limit,
		redisFloat(lon), redisFloat(lat), redisFloat(radiusKM))
}

// redisMaxRead caps one read: a script blocks Redis while it runs, and Lua
// would print a larger limit in a form ZRANGE does not take.
const redisMaxRead = 100_000

func (p *RedisPool) read(ctx context.Context, s *redis.Script, key, poolKey string, limit int, args ...any) ([]*Ticket, error) {
	limit = min(limit, redisMaxRead)
	argv := append([]any{p.prefix, poolKey, limit}, args...)
	recs, err := s.Run(ctx, p.client, []string{key}, argv...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
	}
	ts := make([]*Ticket, 0, len(recs))
	for _, r := range recs {
		t := new(Ticket)
		if err := json.Unmarshal([]byte(r), t); err != nil {
			return nil, fmt.Errorf("match: read pool %s: %w", poolKey, err)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// idArgs returns the record keys and, after head, the ids as script
// arguments. A repeated id is refused: one ticket twice in a match is a
// bug in the caller, not a claim to grant.
func (p *RedisPool) idArgs(ids []string, head ...any) ([]string, []any, error) {
	keys := make([]string, len(ids))
	argv := append(make([]any, 0, len(head)+len(ids)), head...)
	for i, id := range ids {
		for _, prev := range ids[:i] {
			if prev == id {
				return nil, nil, fmt.Errorf("match: ticket %s listed twice", id)
			}
		}
		keys[i] = p.recordKey(id)
		argv = append(argv, id)
	}
	return keys, argv, nil
}

// Claim atomically moves every listed ticket from waiting to claimed for
// matchID, or none if any is not waiting.
func (p *RedisPool) Claim(ctx context.Context, matchID string, ids []string) (bool, error) {
	if matchID == "" || len(ids) == 0 {
		return false, errors.New("match: claim needs a match id and tickets")
	}
	keys, argv, err := p.idArgs(ids, p.prefix, matchID, p.ttlMS())
	if err != nil {
		return false, err
	}
	n, err := redisClaimScript.Run(ctx, p.client, keys, argv...).Int()
	if err != nil {
		return false, fmt.Errorf("match: claim for %s: %w", matchID, err)
	}
	return n == 1, nil
}

// ClaimMany makes several claims in one pipelined round trip; each is
// atomic on its own, exactly as Claim.
func (p *RedisPool) ClaimMany(ctx context.Context, claims []ClaimRequest) ([]bool, error) {
	for attempt := 0; ; attempt++ {
		pipe := p.client.Pipeline()
		cmds := make([]*redis.Cmd, len(claims))
		for i, c := range claims {
			if c.MatchID == "" || len(c.IDs) == 0 {
				return nil, errors.New("match: claim needs a match id and tickets")
			}
			keys, argv, err := p.idArgs(c.IDs, p.prefix, c.MatchID, p.ttlMS())
			if err != nil {
				return nil, err
			}
			cmds[i] = redisClaimScript.EvalSha(ctx, pipe, keys, argv...)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server: load the script, then pipeline.
			if err := redisClaimScript.Load(ctx, p.client).Err(); err != nil {
				return nil, fmt.Errorf("match: claim: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("match: claim: %w", err)
		}
		out := make([]bool, len(claims))
		for i, c := range cmds {
			n, err := c.Int()
			if err != nil {
				return nil, fmt.Errorf("match: claim for %s: %w", claims[i].MatchID, err)
			}
			out[i] = n == 1
		}
		return out, nil
	}
}

// Requeue returns claimed tickets to waiting at their original place.
// Waiting ids and ids whose record is gone (finished, expired) are skipped,
// as MemoryPool does, so one lost record does not fail the engine's pass.
func (p *RedisPool) Requeue(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	keys, argv, err := p.idArgs(ids, p.prefix, p.ttlMS())
	if err != nil {
		return err
	}
	if err := redisRequeueScript.Run(ctx, p.client, keys, argv...).Err(); err != nil {
		return fmt.Errorf("match: requeue: %w", err)
	}
	return nil
}

// Finish deletes the records of claimed tickets; waiting or unknown ids
// are left alone, so finishing twice is harmless.
func (p *RedisPool) Finish(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = p.recordKey(id)
	}
	if err := redisFinishScript.Run(ctx, p.client, keys).Err(); err != nil {
		return fmt.Errorf("match: finish: %w", err)
	}
	return nil
}

// Waiting returns the ticket if it is still waiting.
func (p *RedisPool) Waiting(ctx context.Context, id string) (*Ticket, bool, error) {
	rec, err := p.client.HMGet(ctx, p.recordKey(id), "s", "j").Result()
	if err != nil {
		return nil, false, fmt.Errorf("match: read %s: %w", id, err)
	}
	st, _ := rec[0].(string)
	j, _ := rec[1].(string)
	if st != "waiting" || j == "" {
		return nil, false, nil
	}
	t := new(Ticket)
	if err := json.Unmarshal([]byte(j), t); err != nil {
		return nil, false, fmt.Errorf("match: ticket %s: %w", id, err)
	}
	return t, true, nil
}
