package leaderboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rallyhq/rally/internal/store"
	"github.com/rallyhq/rally/internal/testsvc"
)

// backendFactory returns a fresh, empty backend for one test.
type backendFactory func(t *testing.T) Backend

func embeddedFactory(t *testing.T) Backend {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "rally.db"))
	if err != nil {
		t.Fatal(err)
	}
	be := NewEmbedded(st, EmbeddedOptions{})
	t.Cleanup(func() { _ = be.Close(); _ = st.Close() })
	return be
}

// redisFactory starts one redis-server for the parent test; each backend
// gets its own key prefix.
func redisFactory(parent *testing.T) backendFactory {
	srv := testsvc.StartRedis(parent)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	parent.Cleanup(func() { _ = client.Close() })
	n := 0
	return func(t *testing.T) Backend {
		n++
		return NewRedis(client, fmt.Sprintf("t%d:", n))
	}
}

// fakeClock is a settable clock for period tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func newService(t *testing.T, be Backend, now func() time.Time) *Service {
	t.Helper()
	svc, err := New(context.Background(), Options{
		Backend: be, Now: now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func mustBoard(t *testing.T, svc *Service, b Board) Board {
	t.Helper()
	out, err := svc.CreateBoard(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func submit(t *testing.T, svc *Service, board, owner string, score, sub int64, op Operator) Result {
	t.Helper()
	res, err := svc.Submit(context.Background(), board, Write{Owner: owner, Score: score, Subscore: sub, Operator: op})
	if err != nil {
		t.Fatalf("submit %s %d/%d: %v", owner, score, sub, err)
	}
	return res
}

// order returns the owners of the whole board in rank order, checking
// that ranks run 1, 2, 3...
func order(t *testing.T, svc *Service, board, period string) []string {
	t.Helper()
	var owners []string
	cur := ""
	for {
		page, err := svc.Top(context.Background(), board, period, cur, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			if r.Rank != int64(len(owners)+1) {
				t.Fatalf("%s has rank %d at position %d", r.Owner, r.Rank, len(owners)+1)
			}
			owners = append(owners, r.Owner)
		}
		if page.Next == "" {
			return owners
		}
		cur = page.Next
	}
}

// runConformance holds a backend to the leaderboard's semantics, through
// the Service.
func runConformance(t *testing.T, factory backendFactory) {
	t.Run("DescOrderAndTies", func(t *testing.T) {
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "d", Operator: OpSet})
		submit(t, svc, "d", "a", 100, 5, 0)
		submit(t, svc, "d", "b", 100, 5, 0) // ties a on both: a got there first
		submit(t, svc, "d", "c", 100, 7, 0)
		submit(t, svc, "d", "d", 200, -3, 0)
		submit(t, svc, "d", "e", -50, 0, 0)
		submit(t, svc, "d", "f", 0, 0, 0)
		if got, want := order(t, svc, "d", ""), []string{"d", "c", "a", "b", "f", "e"}; !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v", got, want)
		}
		// Setting the same score again keeps the time it was reached.
		if r := submit(t, svc, "d", "a", 100, 5, 0); r.Changed || r.Record.Rank != 3 {
			t.Fatalf("rewrite of the same score: %+v", r)
		}
		// Leaving and coming back to the score is reaching it again: now
		// after b.
		submit(t, svc, "d", "a", 1, 0, 0)
		submit(t, svc, "d", "a", 100, 5, 0)
		if got, want := order(t, svc, "d", ""), []string{"d", "c", "b", "a", "f", "e"}; !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v", got, want)
		}
	})

	t.Run("AscOrderAndExtremes", func(t *testing.T) {
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "lap", Sort: Asc, Operator: OpSet})
		submit(t, svc, "lap", "slow", MaxScore, MaxScore, 0)
		submit(t, svc, "lap", "neg", -MaxScore, -MaxScore, 0)
		submit(t, svc, "lap", "x", 61_000, 2, 0)
		submit(t, svc, "lap", "y", 61_000, 1, 0)
		submit(t, svc, "lap", "z", 61_000, 1, 0)
		submit(t, svc, "lap", "zero", 0, -1, 0)
		if got, want := order(t, svc, "lap", ""), []string{"neg", "zero", "y", "z", "x", "slow"}; !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v", got, want)
		}
		r, _, err := svc.Rank(context.Background(), "lap", "", "slow")
		if err != nil || r.Rank != 6 || r.Score != MaxScore || r.Subscore != MaxScore {
			t.Fatalf("Rank(slow) = %+v, %v", r, err)
		}
	})

	t.Run("Operators", func(t *testing.T) {
		ctx := context.Background()
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "best"})
		mustBoard(t, svc, Board{ID: "best-asc", Sort: Asc})
		mustBoard(t, svc, Board{ID: "inc", Operator: OpIncr})

		r, err := svc.Submit(ctx, "best", Write{Owner: "p", Score: 10, Subscore: 1, Metadata: `{"run":1}`, Username: "Pat"})
		if err != nil || !r.Changed || r.Record.Score != 10 || r.Record.Submits != 1 || r.Record.Metadata != `{"run":1}` {
			t.Fatalf("first best: %+v %v", r, err)
		}
		r, _ = svc.Submit(ctx, "best", Write{Owner: "p", Score: 9, Subscore: 99, Metadata: `{"run":2}`})
		if r.Changed || r.Record.Score != 10 || r.Record.Subscore != 1 || r.Record.Submits != 2 || r.Record.Metadata != `{"run":1}` {
			t.Fatalf("worse best replaced the record: %+v", r.Record)
		}
		r, _ = svc.Submit(ctx, "best", Write{Owner: "p", Score: 10, Subscore: 2, Metadata: `{"run":3}`})
		if !r.Changed || r.Record.Subscore != 2 || r.Record.Metadata != `{"run":3}` || r.Record.Username != "Pat" {
			t.Fatalf("better subscore did not win: %+v", r.Record)
		}
		r, _ = svc.Submit(ctx, "best", Write{Owner: "p", Score: 3, Operator: OpSet})
		if !r.Changed || r.Record.Score != 3 || r.Record.Metadata != `{"run":3}` {
			t.Fatalf("set override: %+v", r.Record)
		}
		submit(t, svc, "best-asc", "p", 50, 0, 0)
		if r := submit(t, svc, "best-asc", "p", 40, 0, 0); !r.Changed || r.Record.Score != 40 {
			t.Fatalf("asc best: %+v", r.Record)
		}
		if r := submit(t, svc, "best-asc", "p", 45, 0, 0); r.Changed || r.Record.Score != 40 {
			t.Fatalf("asc best took a worse score: %+v", r.Record)
		}

		submit(t, svc, "inc", "p", 5, 1, 0)
		submit(t, svc, "inc", "p", 7, 1, 0)
		if r := submit(t, svc, "inc", "p", 2, 1, OpDecr); r.Record.Score != 10 || r.Record.Subscore != 1 || r.Record.Submits != 3 {
			t.Fatalf("incr/decr: %+v", r.Record)
		}
		if r := submit(t, svc, "inc", "q", 4, 0, OpDecr); r.Record.Score != -4 {
			t.Fatalf("decr from nothing: %+v", r.Record)
		}
		// An increment past the range fails alone and changes nothing.
		submit(t, svc, "inc", "big", MaxScore-1, 0, 0)
		res, err := svc.SubmitMany(ctx, "inc", []Write{
			{Owner: "big", Score: 5}, {Owner: "p", Score: 1}, {Owner: "q", Score: MaxScore, Operator: OpDecr},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, ErrInvalid) || res[1].Err != nil || res[1].Record.Score != 11 || !errors.Is(res[2].Err, ErrInvalid) {
			t.Fatalf("batch with overflows: %+v", res)
		}
		if r, _, _ := svc.Rank(ctx, "inc", "", "big"); r.Score != MaxScore-1 || r.Submits != 1 {
			t.Fatalf("overflowing write changed the record: %+v", r)
		}
		if _, err := svc.Submit(ctx, "inc", Write{Owner: "big", Score: 5}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("single overflowing submit: %v", err)
		}
	})

	t.Run("PagingIsStable", func(t *testing.T) {
		ctx := context.Background()
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "p", Operator: OpSet})
		for i := range 25 {
			submit(t, svc, "p", fmt.Sprintf("o%02d", i), int64(i%5), 0, 0) // many ties
		}
		first, err := svc.Top(ctx, "p", "", "", 10)
		if err != nil || len(first.Records) != 10 || first.Next == "" {
			t.Fatalf("first page: %d records, next %q, %v", len(first.Records), first.Next, err)
		}
		// A record above the cursor moves: the next page still starts
		// right after the last record seen.
		last := first.Records[9]
		submit(t, svc, "p", first.Records[0].Owner, -1, 0, 0)
		second, err := svc.Top(ctx, "p", "", first.Next, 10)
		if err != nil || len(second.Records) != 10 {
			t.Fatalf("second page: %v %v", second, err)
		}
		if !last.KeyOf(Desc).Less(second.Records[0].KeyOf(Desc)) {
			t.Fatalf("second page starts at %+v, not after %+v", second.Records[0], last)
		}
		if second.Records[0].Rank != 10 {
			t.Fatalf("rank after one record dropped below: %d", second.Records[0].Rank)
		}
		third, err := svc.Top(ctx, "p", "", second.Next, 10)
		if err != nil || len(third.Records) != 6 || third.Next != "" { // 15 after the cursor, and the one that moved below it
			t.Fatalf("last page: %d records, next %q, %v", len(third.Records), third.Next, err)
		}
		all := order(t, svc, "p", "")
		if len(all) != 25 || all[24] != first.Records[0].Owner {
			t.Fatalf("full walk: %v", all)
		}
	})

	t.Run("AroundAndRecords", func(t *testing.T) {
		ctx := context.Background()
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "a"})
		for i := range 20 {
			submit(t, svc, "a", fmt.Sprintf("o%02d", i), int64(100-i), 0, 0) // o00 first
		}
		cases := []struct {
			owner      string
			limit      int
			firstRank  int64
			wantLength int
		}{
			{"o10", 5, 9, 5},  // centred: ranks 9-13
			{"o10", 4, 10, 4}, // even: one more after
			{"o00", 5, 1, 5},  // at the top: shifted down
			{"o19", 5, 16, 5}, // at the bottom: shifted up
			{"o05", 50, 1, 20},
			{"o07", 1, 8, 1},
		}
		for _, c := range cases {
			recs, _, err := svc.Around(ctx, "a", "", c.owner, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != c.wantLength || recs[0].Rank != c.firstRank {
				t.Fatalf("Around(%s, %d): %d records from rank %d; want %d from %d", c.owner, c.limit, len(recs), recs[0].Rank, c.wantLength, c.firstRank)
			}
			found := false
			for i, r := range recs {
				found = found || r.Owner == c.owner
				if want := fmt.Sprintf("o%02d", r.Rank-1); r.Owner != want || (i > 0 && r.Rank != recs[i-1].Rank+1) {
					t.Fatalf("Around(%s): %s at rank %d", c.owner, r.Owner, r.Rank)
				}
			}
			if !found {
				t.Fatalf("Around(%s) misses the owner", c.owner)
			}
		}
		if _, _, err := svc.Around(ctx, "a", "", "nobody", 5); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Around without a record: %v", err)
		}
		recs, _, err := svc.Records(ctx, "a", "", []string{"o03", "nobody", "o00", "o19"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%s@%d", r.Owner, r.Rank))
		}
		if want := "o03@4 o00@1 o19@20"; strings.Join(got, " ") != want {
			t.Fatalf("Records = %v, want %s", got, want)
		}
	})

	t.Run("DeleteShiftsRanks", func(t *testing.T) {
		ctx := context.Background()
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "del"})
		for i := range 5 {
			submit(t, svc, "del", fmt.Sprint("o", i), int64(10-i), 0, 0)
		}
		if ok, err := svc.Delete(ctx, "del", "", "o1"); !ok || err != nil {
			t.Fatalf("Delete: %v %v", ok, err)
		}
		if ok, err := svc.Delete(ctx, "del", "", "o1"); ok || err != nil {
			t.Fatalf("second Delete: %v %v", ok, err)
		}
		if got := order(t, svc, "del", ""); !slices.Equal(got, []string{"o0", "o2", "o3", "o4"}) {
			t.Fatalf("after delete: %v", got)
		}
		if _, _, err := svc.Rank(ctx, "del", "", "o1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Rank of deleted: %v", err)
		}
		// A deleted owner starts afresh.
		if r := submit(t, svc, "del", "o1", 1, 0, 0); r.Record.Submits != 1 || r.Record.Rank != 5 {
			t.Fatalf("resubmit after delete: %+v", r.Record)
		}
		if n, _ := svc.Count(ctx, "del", ""); n != 5 {
			t.Fatalf("Count = %d", n)
		}
	})

	t.Run("OpaqueFieldsRoundTrip", func(t *testing.T) {
		ctx := context.Background()
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "meta"})
		meta := `{"a":"1,2:3","emoji":"🏁","nested":{"x":[1,2]}}` + strings.Repeat("é", 300)
		name := "Zoë, the 3:1"
		owner := "user:with,punctuation/and/slashes"
		if _, err := svc.Submit(ctx, "meta", Write{Owner: owner, Username: name, Score: 1, Metadata: meta}); err != nil {
			t.Fatal(err)
		}
		for _, get := range []func() (Record, error){
			func() (Record, error) { r, _, err := svc.Rank(ctx, "meta", "", owner); return r, err },
			func() (Record, error) {
				p, err := svc.Top(ctx, "meta", "", "", 1)
				if err != nil || len(p.Records) != 1 {
					return Record{}, fmt.Errorf("top: %v %v", p, err)
				}
				return p.Records[0], nil
			},
			func() (Record, error) {
				rs, _, err := svc.Around(ctx, "meta", "", owner, 3)
				if err != nil || len(rs) != 1 {
					return Record{}, fmt.Errorf("around: %v %v", rs, err)
				}
				return rs[0], nil
			},
		} {
			r, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if r.Owner != owner || r.Username != name || r.Metadata != meta || r.Created.IsZero() || r.Updated.Before(r.Created) {
				t.Fatalf("round trip: %+v", r)
			}
		}
	})

	t.Run("PeriodsKeptApart", func(t *testing.T) {
		ctx := context.Background()
		clock := &fakeClock{t: time.Date(2025, 3, 3, 10, 0, 0, 0, time.UTC)} // a Monday
		svc := newService(t, factory(t), clock.Now)
		mustBoard(t, svc, Board{ID: "daily", Reset: "0 0 * * *"})
		submit(t, svc, "daily", "a", 5, 0, 0)
		submit(t, svc, "daily", "b", 7, 0, 0)
		clock.Set(time.Date(2025, 3, 4, 0, 0, 1, 0, time.UTC))
		submit(t, svc, "daily", "a", 1, 0, 0)
		if r, _, _ := svc.Rank(ctx, "daily", "", "a"); r.Score != 1 || r.Submits != 1 {
			t.Fatalf("new period carried the old record: %+v", r)
		}
		ps, err := svc.Periods(ctx, "daily")
		if err != nil || len(ps) != 2 {
			t.Fatalf("Periods = %v, %v", ps, err)
		}
		if ps[0].ID != "20250304T000000Z" || !ps[1].End.Equal(ps[0].Start) {
			t.Fatalf("periods: %+v", ps)
		}
		if got := order(t, svc, "daily", ps[1].ID); !slices.Equal(got, []string{"b", "a"}) {
			t.Fatalf("archived period: %v", got)
		}
	})

	t.Run("ConcurrentWritesAreAtomic", func(t *testing.T) {
		svc := newService(t, factory(t), nil)
		mustBoard(t, svc, Board{ID: "c", Operator: OpIncr})
		const writers, each = 24, 15
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				for i := range each {
					owner := fmt.Sprint("p", (g+i)%6)
					ws := []Write{{Owner: owner, Score: 1}}
					if i%3 == 0 { // some batches of two, to mix call sizes
						ws = append(ws, Write{Owner: "pair", Score: 2})
					}
					res, err := svc.SubmitMany(context.Background(), "c", ws)
					if err != nil {
						t.Error(err)
						return
					}
					for j, r := range res {
						if r.Record.Owner != ws[j].Owner || r.Record.Rank < 1 {
							t.Errorf("result for %s is %+v", ws[j].Owner, r.Record)
						}
					}
				}
			})
		}
		wg.Wait()
		var total int64
		page, err := svc.Top(context.Background(), "c", "", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			total += r.Score
		}
		if want := int64(writers*each + writers*((each+2)/3)*2); total != want {
			t.Fatalf("increments add up to %d, want %d", total, want)
		}
	})

	t.Run("MatchesModel", func(t *testing.T) {
		for _, sort := range []SortOrder{Desc, Asc} {
			svc := newService(t, factory(t), nil)
			mustBoard(t, svc, Board{ID: "m", Sort: sort})
			type rec struct {
				score, sub int64
				seq        uint64
			}
			model := map[string]*rec{}
			var seq uint64
			rng := rand.New(rand.NewPCG(uint64(sort), 42))
			ops := []Operator{OpBest, OpSet, OpIncr, OpDecr}
			var batch []Write
			flush := func() {
				res, err := svc.SubmitMany(context.Background(), "m", batch)
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range batch {
					old := model[w.Owner]
					var os, osub int64
					if old != nil {
						os, osub = old.score, old.sub
					}
					ns, nsub, _, err := combine(w.Operator, sort, old != nil, os, osub, w.Score, w.Subscore)
					if (err != nil) != (res[i].Err != nil) {
						t.Fatalf("write %+v: backend error %v, model error %v", w, res[i].Err, err)
					}
					if err != nil {
						continue
					}
					if old == nil || ns != os || nsub != osub {
						seq++
						model[w.Owner] = &rec{ns, nsub, seq}
					}
					if r := res[i].Record; r.Score != ns || r.Subscore != nsub {
						t.Fatalf("write %+v gave %d/%d, model %d/%d", w, r.Score, r.Subscore, ns, nsub)
					}
				}
				batch = batch[:0]
			}
			for i := 0; i < 600; i++ {
				batch = append(batch, Write{
					Owner: fmt.Sprint("p", rng.IntN(60)), Score: rng.Int64N(21) - 10, Subscore: rng.Int64N(3),
					Operator: ops[rng.IntN(len(ops))],
				})
				if rng.IntN(4) == 0 {
					flush()
				}
				if rng.IntN(50) == 0 {
					flush()
					victim := fmt.Sprint("p", rng.IntN(60))
					ok, err := svc.Delete(context.Background(), "m", "", victim)
					if err != nil || ok != (model[victim] != nil) {
						t.Fatalf("Delete(%s) = %v, %v", victim, ok, err)
					}
					delete(model, victim)
				}
			}
			flush()
			want := slices.Collect(func(yield func(string) bool) {
				for o := range model {
					if !yield(o) {
						return
					}
				}
			})
			slices.SortFunc(want, func(a, b string) int {
				ra, rb := model[a], model[b]
				return cmpKeys(keyOf(sort, ra.score, ra.sub, ra.seq), keyOf(sort, rb.score, rb.sub, rb.seq))
			})
			if got := order(t, svc, "m", ""); !slices.Equal(got, want) {
				t.Fatalf("%s order:\n got %v\nwant %v", sort, got, want)
			}
		}
	})
}

func TestLeaderboardConformanceEmbedded(t *testing.T) { runConformance(t, embeddedFactory) }

func TestLeaderboardConformanceRedis(t *testing.T) { runConformance(t, redisFactory(t)) }
