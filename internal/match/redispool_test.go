package match

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const testRedisPrefix = "rally:match:"

// testRedisEpoch keeps creation times whole milliseconds in UTC, as they
// come back from Redis.
var testRedisEpoch = time.UnixMilli(1_700_000_000_000).UTC()

func newTestRedisPool(t testing.TB) (*RedisPool, *redis.Client) {
	t.Helper()
	c := newRedisClient(t, startRedis(t))
	return NewRedisPool(c, testRedisPrefix), c
}

func redisTicket(id, pool string, rating float64, age int) *Ticket {
	return &Ticket{
		ID:      id,
		Queue:   "duel",
		Players: []Player{{UserID: "u-" + id, Mu: rating, Sigma: 8.3}},
		Created: testRedisEpoch.Add(time.Duration(age) * time.Millisecond),
		Rating:  rating,
		PoolKey: pool,
	}
}

func mustAdd(t testing.TB, p *RedisPool, ts ...*Ticket) {
	t.Helper()
	for _, tk := range ts {
		if err := p.Add(context.Background(), tk); err != nil {
			t.Fatal(err)
		}
	}
}

func ticketIDs(ts []*Ticket) []string {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	return ids
}

func wantIDs(t *testing.T, what string, got []*Ticket, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if g := ticketIDs(got); !reflect.DeepEqual(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Fatalf("%s = %v, want %v", what, g, want)
	}
}

func mustClaim(t *testing.T, p *RedisPool, match string, want bool, ids ...string) {
	t.Helper()
	ok, err := p.Claim(context.Background(), match, ids)
	if err != nil {
		t.Fatal(err)
	}
	if ok != want {
		t.Fatalf("Claim(%s, %v) = %v, want %v", match, ids, ok, want)
	}
}

// recordState reads a ticket's state and match id straight from Redis.
func recordState(t testing.TB, c *redis.Client, id string) (state, match string) {
	t.Helper()
	v, err := c.HMGet(context.Background(), testRedisPrefix+"t:"+id, "s", "m").Result()
	if err != nil {
		t.Fatal(err)
	}
	state, _ = v[0].(string)
	match, _ = v[1].(string)
	return state, match
}

func TestRedisPoolAddStoresTheWholeTicket(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	in := &Ticket{
		ID:    "a",
		Queue: "duel",
		Players: []Player{
			{UserID: "u1", Mu: 25.123456789012345, Sigma: 8.333333333333334},
			{UserID: "u2", Mu: 31, Sigma: 2.5},
		},
		Regions: map[string]uint32{"eu": 20, "us": 110},
		Geo:     &GeoPoint{Lat: 52.52, Lon: 13.405},
		Strings: map[string]string{"mode": "ranked"},
		Numbers: map[string]float64{"level": 12},
		Created: testRedisEpoch,
		Rating:  28.061728394506172,
		PoolKey: "duel|ranked",
	}
	mustAdd(t, p, in)

	got, err := p.Oldest(ctx, in.PoolKey, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Oldest = %v, %v", got, err)
	}
	if !got[0].Created.Equal(in.Created) {
		t.Fatalf("Created = %v, want %v", got[0].Created, in.Created)
	}
	got[0].Created = in.Created
	if !reflect.DeepEqual(got[0], in) {
		t.Fatalf("stored %+v\nread   %+v", in, got[0])
	}

	if err := p.Add(ctx, redisTicket("a", "other", 1, 0)); !errors.Is(err, ErrTicketExists) {
		t.Fatalf("second Add of a: %v, want ErrTicketExists", err)
	}
	mustClaim(t, p, "m1", true, "a")
	if err := p.Add(ctx, redisTicket("a", in.PoolKey, 1, 0)); !errors.Is(err, ErrTicketExists) {
		t.Fatalf("Add over a claimed ticket: %v, want ErrTicketExists", err)
	}
	if s, m := recordState(t, c, "a"); s != "claimed" || m != "m1" {
		t.Fatalf("a is %s/%s after a refused Add", s, m)
	}
}

func TestRedisPoolKeyLayoutAndTTL(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	tk := redisTicket("a", "q", 1500, 42)
	tk.Geo = &GeoPoint{Lat: 48.8566, Lon: 2.3522}
	mustAdd(t, p, tk)

	if s, _ := recordState(t, c, "a"); s != "waiting" {
		t.Fatalf("state = %q", s)
	}
	if r, err := c.ZScore(ctx, testRedisPrefix+"p:q:r", "a").Result(); err != nil || r != 1500 {
		t.Fatalf("rating score = %v, %v", r, err)
	}
	if cr, err := c.ZScore(ctx, testRedisPrefix+"p:q:c", "a").Result(); err != nil || cr != float64(tk.Created.UnixMilli()) {
		t.Fatalf("creation score = %v, %v", cr, err)
	}
	if pos, err := c.GeoPos(ctx, testRedisPrefix+"p:q:g", "a").Result(); err != nil || pos[0] == nil || math.Abs(pos[0].Latitude-48.8566) > 1e-4 {
		t.Fatalf("geo = %v, %v", pos, err)
	}
	if ok, err := c.SIsMember(ctx, testRedisPrefix+"pools", "q").Result(); err != nil || !ok {
		t.Fatalf("pools has q: %v, %v", ok, err)
	}
	for _, k := range []string{"t:a", "p:q:r", "p:q:c", "p:q:g", "pools"} {
		ttl, err := c.PTTL(ctx, testRedisPrefix+k).Result()
		if err != nil || ttl <= 0 || ttl > redisRecordTTL {
			t.Errorf("TTL of %s = %v, %v", k, ttl, err)
		}
	}
	mustClaim(t, p, "m1", true, "a")
	if ttl, err := c.PTTL(ctx, testRedisPrefix+"t:a").Result(); err != nil || ttl <= 0 {
		t.Errorf("TTL of a claimed record = %v, %v", ttl, err)
	}
}

func TestRedisPoolAddRefusesBadInput(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	nan := redisTicket("nan", "q", math.NaN(), 0)
	pole := redisTicket("pole", "q", 1, 0)
	pole.Geo = &GeoPoint{Lat: 89.9, Lon: 0}
	for _, tk := range []*Ticket{nan, pole, redisTicket("", "q", 1, 0)} {
		if err := p.Add(ctx, tk); err == nil {
			t.Errorf("Add(%q) succeeded", tk.ID)
		}
	}
	if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("refused adds left %d keys (%v)", n, err)
	}
}

func TestRedisPoolNearIsNearestFirstWithinTheWindow(t *testing.T) {
	p, _ := newTestRedisPool(t)
	ctx := context.Background()
	for i, r := range []float64{1000, 1010, 990, 1020, 975, 974.5, 1100, 1025} {
		mustAdd(t, p, redisTicket(fmt.Sprint(r), "q", r, i))
	}
	mustAdd(t, p, redisTicket("elsewhere", "other", 1000, 0))

	got, err := p.Near(ctx, "q", 1000, 25, 10)
	// Equal distances: the higher rating first. Both bounds are inclusive.
	wantIDs(t, "Near(1000±25)", got, err, "1000", "1010", "990", "1020", "1025", "975")
	got, err = p.Near(ctx, "q", 1000, 25, 3)
	wantIDs(t, "Near(1000±25, 3)", got, err, "1000", "1010", "990")
	got, err = p.Near(ctx, "q", 1005, 5, 10)
	wantIDs(t, "Near(1005±5)", got, err, "1010", "1000")
	got, err = p.Near(ctx, "q", 1000, 0, 10)
	wantIDs(t, "Near(1000±0)", got, err, "1000")
	got, err = p.Near(ctx, "q", 1060, 30, 10)
	wantIDs(t, "Near(1060±30)", got, err)
	got, err = p.Near(ctx, "q", 1000, math.Inf(1), 10)
	wantIDs(t, "Near(1000±inf)", got, err, "1000", "1010", "990", "1020", "1025", "975", "974.5", "1100")
	got, err = p.Near(ctx, "none", 1000, 25, 10)
	wantIDs(t, "Near on an empty pool", got, err)
	got, err = p.Near(ctx, "q", 1000, -1, 10)
	wantIDs(t, "Near with a negative window", got, err)
}

func TestRedisPoolNearMergesBothSidesUnderTheLimit(t *testing.T) {
	p, _ := newTestRedisPool(t)
	// Many above, one below: each side is fetched with the limit, then
	// merged, so the one below is not crowded out.
	for i := 1; i <= 10; i++ {
		mustAdd(t, p, redisTicket(fmt.Sprint(1000+i), "q", float64(1000+i), i))
	}
	mustAdd(t, p, redisTicket("999", "q", 999, 0))
	got, err := p.Near(context.Background(), "q", 1000, 100, 3)
	wantIDs(t, "Near", got, err, "1001", "999", "1002")
}

func TestRedisPoolOldestIsByCreation(t *testing.T) {
	p, _ := newTestRedisPool(t)
	ctx := context.Background()
	mustAdd(t, p,
		redisTicket("third", "q", 1, 300),
		redisTicket("first", "q", 5, 100),
		redisTicket("second", "q", 3, 200),
		redisTicket("other", "r", 1, 0),
	)
	got, err := p.Oldest(ctx, "q", 10)
	wantIDs(t, "Oldest", got, err, "first", "second", "third")
	got, err = p.Oldest(ctx, "q", 2)
	wantIDs(t, "Oldest(2)", got, err, "first", "second")
	got, err = p.Oldest(ctx, "q", 0)
	wantIDs(t, "Oldest(0)", got, err)
	got, err = p.Oldest(ctx, "q", math.MaxInt)
	wantIDs(t, "Oldest(MaxInt)", got, err, "first", "second", "third")
	got, err = p.Near(ctx, "q", 3, 10, math.MaxInt)
	wantIDs(t, "Near(MaxInt)", got, err, "second", "first", "third")
}

func TestRedisPoolRemoveOnlyWaiting(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	mustAdd(t, p, redisTicket("a", "q", 1, 0), redisTicket("b", "q", 2, 1))

	for _, tc := range []struct {
		id   string
		want bool
	}{{"a", true}, {"a", false}, {"unknown", false}} {
		if ok, err := p.Remove(ctx, tc.id); err != nil || ok != tc.want {
			t.Fatalf("Remove(%s) = %v, %v; want %v", tc.id, ok, err, tc.want)
		}
	}
	if n, _ := c.Exists(ctx, testRedisPrefix+"t:a").Result(); n != 0 {
		t.Fatal("removed record still stored")
	}
	mustClaim(t, p, "m1", true, "b")
	if ok, err := p.Remove(ctx, "b"); err != nil || ok {
		t.Fatalf("Remove(claimed b) = %v, %v", ok, err)
	}
	if s, m := recordState(t, c, "b"); s != "claimed" || m != "m1" {
		t.Fatalf("b is %s/%s after Remove", s, m)
	}
}

func TestRedisPoolClaimIsAllOrNone(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	mustAdd(t, p, redisTicket("a", "q", 1, 0), redisTicket("b", "q", 2, 1), redisTicket("c", "q", 3, 2))

	mustClaim(t, p, "m1", true, "a", "b")
	mustClaim(t, p, "m2", false, "c", "b")
	mustClaim(t, p, "m3", false, "c", "unknown")
	for id, want := range map[string][2]string{"a": {"claimed", "m1"}, "b": {"claimed", "m1"}, "c": {"waiting", ""}} {
		if s, m := recordState(t, c, id); s != want[0] || m != want[1] {
			t.Errorf("%s is %s/%s, want %s/%s", id, s, m, want[0], want[1])
		}
	}
	got, err := p.Oldest(ctx, "q", 10)
	wantIDs(t, "Oldest after claims", got, err, "c")
	got, err = p.Near(ctx, "q", 2, 10, 10)
	wantIDs(t, "Near after claims", got, err, "c")

	if _, err := p.Claim(ctx, "m4", []string{"c", "c"}); err == nil {
		t.Error("Claim of a repeated id succeeded")
	}
	if _, err := p.Claim(ctx, "m4", nil); err == nil {
		t.Error("Claim of no ids succeeded")
	}
	if s, _ := recordState(t, c, "c"); s != "waiting" {
		t.Errorf("c is %s after refused claims", s)
	}
}

func TestRedisPoolRequeueKeepsTheOriginalPlace(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	a := redisTicket("a", "q", 1000, 0)
	a.Geo = &GeoPoint{Lat: 52.52, Lon: 13.405}
	mustAdd(t, p, a, redisTicket("b", "q", 1200, 10), redisTicket("c", "q", 1300, 20))

	mustClaim(t, p, "m1", true, "a", "b")
	got, err := p.Oldest(ctx, "q", 10)
	wantIDs(t, "Oldest while claimed", got, err, "c")
	if err := p.Requeue(ctx, []string{"b", "a"}); err != nil {
		t.Fatal(err)
	}
	got, err = p.Oldest(ctx, "q", 10)
	wantIDs(t, "Oldest after requeue", got, err, "a", "b", "c")
	got, err = p.Near(ctx, "q", 1000, 250, 10)
	wantIDs(t, "Near after requeue", got, err, "a", "b")
	got, err = p.GeoNear(ctx, "q", 52.5, 13.4, 10, 10)
	wantIDs(t, "GeoNear after requeue", got, err, "a")
	if s, m := recordState(t, c, "a"); s != "waiting" || m != "" {
		t.Fatalf("a is %s/%s after requeue", s, m)
	}

	// Requeue of a waiting or unknown ticket changes nothing.
	if err := p.Requeue(ctx, []string{"c", "gone"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, testRedisPrefix+"t:gone").Result(); n != 0 {
		t.Fatal("Requeue created a record")
	}
	got, err = p.Oldest(ctx, "q", 10)
	wantIDs(t, "Oldest after a no-op requeue", got, err, "a", "b", "c")
	mustClaim(t, p, "m2", true, "a", "b", "c")
}

func TestRedisPoolFinishForgetsClaimedTickets(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	mustAdd(t, p, redisTicket("a", "q", 1, 0), redisTicket("b", "q", 2, 1), redisTicket("w", "q", 3, 2))
	mustClaim(t, p, "m1", true, "a", "b")

	if err := p.Finish(ctx, []string{"a", "b", "w", "unknown"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, testRedisPrefix+"t:a", testRedisPrefix+"t:b").Result(); n != 0 {
		t.Fatalf("%d finished records still stored", n)
	}
	if s, _ := recordState(t, c, "w"); s != "waiting" {
		t.Fatalf("Finish touched a waiting ticket: %q", s)
	}
	if err := p.Finish(ctx, []string{"a"}); err != nil {
		t.Fatalf("second Finish: %v", err)
	}
	if err := p.Requeue(ctx, []string{"a"}); err != nil {
		t.Fatalf("Requeue after Finish: %v", err)
	}
	mustClaim(t, p, "m2", false, "a")
	if keys, _ := p.Keys(ctx); !reflect.DeepEqual(keys, []string{"q"}) {
		t.Fatalf("Keys = %v", keys)
	}
}

func TestRedisPoolKeysEmptyAndLeaveNoKeys(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	g := redisTicket("g", "p2", 1, 2)
	g.Geo = &GeoPoint{Lat: 1, Lon: 1}
	mustAdd(t, p, redisTicket("a", "p1", 1, 0), redisTicket("b", "p1", 1, 1), g)

	keys, err := p.Keys(ctx)
	if err != nil || !reflect.DeepEqual(keys, []string{"p1", "p2"}) {
		t.Fatalf("Keys = %v, %v", keys, err)
	}
	mustClaim(t, p, "m1", true, "a", "b")
	if keys, err = p.Keys(ctx); err != nil || !reflect.DeepEqual(keys, []string{"p2"}) {
		t.Fatalf("Keys after claiming p1 = %v, %v", keys, err)
	}
	if ok, err := p.Remove(ctx, "g"); err != nil || !ok {
		t.Fatalf("Remove(g) = %v, %v", ok, err)
	}
	if keys, err = p.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("Keys after emptying = %v, %v", keys, err)
	}
	if err := p.Finish(ctx, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if left, _ := c.Keys(ctx, "*").Result(); len(left) != 0 {
		t.Fatalf("keys left behind: %v", left)
	}
}

func TestRedisPoolGeoNear(t *testing.T) {
	p, _ := newTestRedisPool(t)
	ctx := context.Background()
	at := func(id string, lat, lon float64) *Ticket {
		tk := redisTicket(id, "q", 1000, len(id))
		tk.Geo = &GeoPoint{Lat: lat, Lon: lon}
		return tk
	}
	mustAdd(t, p,
		at("paris", 48.8566, 2.3522),
		at("tokyo", 35.6762, 139.6503),
		at("berlin", 52.52, 13.405),
		at("potsdam", 52.3906, 13.0645),
		redisTicket("nowhere", "q", 1000, 0),
	)
	// Any Pool may be asked, as the engine does.
	var pool Pool = p
	g, ok := pool.(interface {
		GeoNear(ctx context.Context, poolKey string, lat, lon, radiusKM float64, limit int) ([]*Ticket, error)
	})
	if !ok {
		t.Fatal("RedisPool has no GeoNear")
	}
	got, err := g.GeoNear(ctx, "q", 52.52, 13.405, 1000, 10)
	wantIDs(t, "GeoNear(Berlin, 1000 km)", got, err, "berlin", "potsdam", "paris")
	got, err = g.GeoNear(ctx, "q", 52.52, 13.405, 1000, 2)
	wantIDs(t, "GeoNear(Berlin, 1000 km, 2)", got, err, "berlin", "potsdam")
	mustClaim(t, p, "m1", true, "potsdam")
	got, err = g.GeoNear(ctx, "q", 52.52, 13.405, 1000, 10)
	wantIDs(t, "GeoNear after a claim", got, err, "berlin", "paris")
	got, err = g.GeoNear(ctx, "q", 0, 0, 100, 10)
	wantIDs(t, "GeoNear(nothing near)", got, err)
}

func TestRedisPoolReadsDropExpiredRecords(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	for i := range 12 {
		tk := redisTicket(fmt.Sprint("t", i), "q", float64(1000+i), i)
		tk.Geo = &GeoPoint{Lat: 10, Lon: 10}
		mustAdd(t, p, tk)
	}
	// A record that expired leaves its ids behind in the index, as a crash
	// between writes would; reads skip and drop them.
	for _, id := range []string{"t0", "t1", "t2", "t3", "t5"} {
		c.Del(ctx, testRedisPrefix+"t:"+id)
	}
	got, err := p.Oldest(ctx, "q", 3)
	wantIDs(t, "Oldest", got, err, "t4", "t6", "t7")
	got, err = p.Near(ctx, "q", 1000, 100, 2)
	wantIDs(t, "Near", got, err, "t4", "t6")
	for _, set := range []string{"r", "c", "g"} {
		if n, _ := c.ZCard(ctx, testRedisPrefix+"p:q:"+set).Result(); n != 7 {
			t.Errorf("%s set holds %d ids, want the 7 live ones", set, n)
		}
	}

	for i := range 12 {
		c.Del(ctx, testRedisPrefix+"t:"+fmt.Sprint("t", i))
	}
	got, err = p.GeoNear(ctx, "q", 10, 10, 10, 100)
	wantIDs(t, "GeoNear over expired records", got, err)
	got, err = p.Oldest(ctx, "q", 100)
	wantIDs(t, "Oldest over expired records", got, err)
	if keys, err := p.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("Keys = %v, %v: an expired pool is still listed", keys, err)
	}
}

// TestRedisPoolReplicasNeverClaimATicketTwice runs two pools on separate
// clients, as two replicas would be, each with many matchmakers racing for
// the same tickets while more arrive.
func TestRedisPoolReplicasNeverClaimATicketTwice(t *testing.T) {
	srv := startRedis(t)
	replicas := []*RedisPool{
		NewRedisPool(newRedisClient(t, srv), testRedisPrefix),
		NewRedisPool(newRedisClient(t, srv), testRedisPrefix),
	}
	inspect := newRedisClient(t, srv)
	ctx := context.Background()

	const (
		tickets    = 1500
		matchmaker = 8 // per replica
	)
	poolKeys := []string{"duel|eu", "duel|us"}
	poolOf := make(map[string]string, tickets)
	for i := range tickets {
		poolOf[fmt.Sprintf("t%04d", i)] = poolKeys[i%len(poolKeys)]
	}

	var (
		mu       sync.Mutex
		claims   = map[string][]string{} // match id -> ticket ids
		attempts atomic.Int64
		refused  atomic.Int64
		done     = make(chan struct{})
		wg       sync.WaitGroup
	)

	wg.Go(func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range tickets {
			id := fmt.Sprintf("t%04d", i)
			tk := redisTicket(id, poolOf[id], 1000+rng.Float64()*200, i)
			if i%3 == 0 {
				tk.Geo = &GeoPoint{Lat: rng.Float64()*100 - 50, Lon: rng.Float64()*300 - 150}
			}
			if err := replicas[i%2].Add(ctx, tk); err != nil {
				t.Error(err)
				return
			}
		}
	})

	matchmake := func(replica, worker int, p *RedisPool) {
		rng := rand.New(rand.NewPCG(uint64(replica), uint64(worker)))
		seq := 0
		// Keep going a little after the last add so the final tickets are
		// raced for too.
		for extra := 0; extra < 20; {
			select {
			case <-done:
				extra++
			default:
			}
			keys, err := p.Keys(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			for _, k := range keys {
				oldest, err := p.Oldest(ctx, k, 3)
				if err != nil {
					t.Error(err)
					return
				}
				for _, anchor := range oldest {
					near, err := p.Near(ctx, k, anchor.Rating, 40, 8)
					if err != nil {
						t.Error(err)
						return
					}
					size := 2 + rng.IntN(3)
					if len(near) < size {
						continue
					}
					rng.Shuffle(len(near), func(i, j int) { near[i], near[j] = near[j], near[i] })
					ids := ticketIDs(near[:size])
					seq++
					matchID := fmt.Sprintf("r%d-w%d-%d", replica, worker, seq)
					ok, err := p.Claim(ctx, matchID, ids)
					if err != nil {
						t.Error(err)
						return
					}
					attempts.Add(1)
					if !ok {
						refused.Add(1)
						continue
					}
					mu.Lock()
					claims[matchID] = ids
					mu.Unlock()
				}
			}
		}
	}
	for r, p := range replicas {
		for w := range matchmaker {
			wg.Go(func() { matchmake(r, w, p) })
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	claimedBy := map[string]string{}
	for match, ids := range claims {
		for _, id := range ids {
			if prev, dup := claimedBy[id]; dup {
				t.Errorf("ticket %s claimed by both %s and %s", id, prev, match)
			}
			claimedBy[id] = match
			if poolOf[id] != poolOf[ids[0]] {
				t.Errorf("match %s mixes pools: %v", match, ids)
			}
		}
	}
	waiting := map[string]int64{}
	for id, pool := range poolOf {
		state, match := recordState(t, inspect, id)
		_, errR := inspect.ZScore(ctx, testRedisPrefix+"p:"+pool+":r", id).Result()
		_, errC := inspect.ZScore(ctx, testRedisPrefix+"p:"+pool+":c", id).Result()
		indexed := errR == nil && errC == nil
		if want, ok := claimedBy[id]; ok {
			if state != "claimed" || match != want || errR != redis.Nil || errC != redis.Nil {
				t.Errorf("%s: claimed by %s but stored as %s/%s (indexed: %v)", id, want, state, match, indexed)
			}
			continue
		}
		if state != "waiting" || !indexed {
			t.Errorf("%s: never claimed but stored as %s/%s (indexed: %v)", id, state, match, indexed)
		}
		waiting[pool]++
	}
	for _, pool := range poolKeys {
		if n, _ := inspect.ZCard(ctx, testRedisPrefix+"p:"+pool+":c").Result(); n != waiting[pool] {
			t.Errorf("pool %s indexes %d ids, want its %d waiting", pool, n, waiting[pool])
		}
	}
	if len(claims) == 0 {
		t.Fatal("no claim succeeded")
	}
	t.Logf("%d tickets: %d matches claimed %d tickets; %d of %d claims refused as already taken",
		tickets, len(claims), len(claimedBy), refused.Load(), attempts.Load())
}

func BenchmarkRedisPoolClaim(b *testing.B) {
	p, _ := newTestRedisPool(b)
	ctx := context.Background()
	// Load the tickets outside the timer, in parallel to keep setup short.
	n := 2 * b.N
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint("t", i)
	}
	var wg sync.WaitGroup
	const loaders = 16
	for l := range loaders {
		wg.Go(func() {
			for i := l; i < n; i += loaders {
				tk := redisTicket(names[i], "q", float64(i%500), i)
				if err := p.Add(ctx, tk); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ids := names[2*i : 2*i+2]
		ok, err := p.Claim(ctx, "m", ids)
		if err != nil || !ok {
			b.Fatalf("Claim(%v) = %v, %v", ids, ok, err)
		}
	}
}

func BenchmarkRedisPoolNear(b *testing.B) {
	p, _ := newTestRedisPool(b)
	ctx := context.Background()
	for i := range 2000 {
		mustAdd(b, p, redisTicket(fmt.Sprint("t", i), "q", float64(i), i))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := p.Near(ctx, "q", rng.Float64()*2000, 50, 8)
		if err != nil || len(got) != 8 {
			b.Fatalf("Near = %d tickets, %v", len(got), err)
		}
	}
}

// NearMany answers like Near, query by query, in one round trip; it also
// works before the script was ever loaded on the server.
func TestRedisNearManyMatchesNear(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		mustAdd(t, p, redisTicket(fmt.Sprintf("t%02d", i), "q", 1000+float64(i*10), i))
	}
	qs := []NearQuery{{Rating: 1000, Window: 50, Limit: 4}, {Rating: 1150, Window: 25, Limit: 10}, {Rating: 5000, Window: 1, Limit: 3}}
	many, err := p.NearMany(ctx, "q", qs)
	if err != nil {
		t.Fatal(err)
	}
	for i, q := range qs {
		one, err := p.Near(ctx, "q", q.Rating, q.Window, q.Limit)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ticketIDs(one)) != fmt.Sprint(ticketIDs(many[i])) {
			t.Errorf("query %d: NearMany %v, Near %v", i, ticketIDs(many[i]), ticketIDs(one))
		}
	}
}

// ClaimMany grants each claim all-or-nothing, as Claim does, even when the
// claims of one call compete for a ticket.
func TestRedisClaimManyIsAtomicPerClaim(t *testing.T) {
	p, c := newTestRedisPool(t)
	ctx := context.Background()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		mustAdd(t, p, redisTicket(fmt.Sprintf("c%d", i), "q", 1000, i))
	}
	got, err := p.ClaimMany(ctx, []ClaimRequest{
		{MatchID: "m1", IDs: []string{"c0", "c1"}},
		{MatchID: "m2", IDs: []string{"c1", "c2"}}, // c1 is gone by now: refused whole
		{MatchID: "m3", IDs: []string{"c3", "c4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[true false true]" {
		t.Fatalf("claims %v", got)
	}
	left, err := p.Oldest(ctx, "q", 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ticketIDs(left)) != "[c2 c5]" {
		t.Fatalf("waiting after claims: %v", ticketIDs(left))
	}
}

// Waiting reads a waiting ticket back whole, and nothing once it is
// claimed or removed — in both pools.
func TestPoolsReportWaitingTickets(t *testing.T) {
	rp, _ := newTestRedisPool(t)
	for name, p := range map[string]Pool{"redis": rp, "memory": NewMemoryPool()} {
		ctx := context.Background()
		for _, tk := range []*Ticket{redisTicket("w1", "duel", 1500, 3), redisTicket("w2", "duel", 1510, 2)} {
			if err := p.Add(ctx, tk); err != nil {
				t.Fatal(err)
			}
		}
		got, ok, err := p.Waiting(ctx, "w1")
		if err != nil || !ok || got.ID != "w1" || got.Rating != 1500 || len(got.Players) != len(redisTicket("w1", "duel", 1500, 3).Players) {
			t.Fatalf("%s: waiting w1 = %+v, %v, %v", name, got, ok, err)
		}
		if ok, err := p.Claim(ctx, "m1", []string{"w1"}); err != nil || !ok {
			t.Fatalf("%s: claim: %v %v", name, ok, err)
		}
		if _, ok, err := p.Waiting(ctx, "w1"); err != nil || ok {
			t.Fatalf("%s: a claimed ticket reads as waiting (%v)", name, err)
		}
		if _, err := p.Remove(ctx, "w2"); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"w2", "never"} {
			if _, ok, err := p.Waiting(ctx, id); err != nil || ok {
				t.Fatalf("%s: %s reads as waiting (%v)", name, id, err)
			}
		}
	}
}
