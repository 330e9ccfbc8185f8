package leaderboard

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// check walks the whole tree and verifies every invariant: separators
// bound their children, counts are subtree sizes, the leaf chain visits
// every key in order, and Rank/At agree with the model.
func (x *Index) check(t *testing.T, model []Key) {
	t.Helper()
	if x.Len() != len(model) {
		t.Fatalf("Len = %d, model %d", x.Len(), len(model))
	}
	if len(model) == 0 {
		if x.root != nil || x.first != nil {
			t.Fatal("empty index keeps nodes")
		}
		return
	}
	var walk func(n *inner, lo Key, hasLo bool, hi Key, hasHi bool) int
	walk = func(n *inner, lo Key, hasLo bool, hi Key, hasHi bool) int {
		if n.n == 0 {
			t.Fatal("empty inner node")
		}
		total := 0
		for i := 0; i < n.n; i++ {
			if i > 0 && !n.keys.at(i-1).Less(n.keys.at(i)) {
				t.Fatalf("separators out of order at level %d", n.level)
			}
			cl, cLo := n.keys.at(i), true
			if i == 0 {
				cl, cLo = lo, hasLo
			}
			ch, cHi := hi, hasHi
			if i+1 < n.n {
				ch, cHi = n.keys.at(i+1), true
			}
			var got int
			if n.level == 1 {
				l := n.leaves[i]
				if l == nil || l.n == 0 {
					t.Fatal("missing or empty leaf")
				}
				for j := 0; j < l.n; j++ {
					k := l.keys.at(j)
					if k.Less(n.keys.at(i)) || (cLo && k.Less(cl)) || (cHi && !k.Less(ch)) {
						t.Fatalf("key %v outside its leaf's range", k)
					}
				}
				got = l.n
			} else {
				if n.kids[i].level != n.level-1 {
					t.Fatal("child level")
				}
				got = walk(n.kids[i], cl, cLo, ch, cHi)
			}
			if got != int(n.counts[i]) {
				t.Fatalf("count %d, subtree holds %d", n.counts[i], got)
			}
			total += got
		}
		return total
	}
	if got := walk(x.root, Key{}, false, Key{}, false); got != len(model) {
		t.Fatalf("tree holds %d, model %d", got, len(model))
	}
	var chain []Key
	var prev *leaf
	for l := x.first; l != nil; l = l.next {
		if l.prev != prev {
			t.Fatal("broken prev link")
		}
		for j := 0; j < l.n; j++ {
			chain = append(chain, l.keys.at(j))
		}
		prev = l
	}
	if !slices.Equal(chain, model) {
		t.Fatal("leaf chain differs from the model")
	}
	for _, r := range []int{0, len(model) / 3, len(model) / 2, len(model) - 1} {
		if c := x.At(r); !c.Valid() || c.Key() != model[r] {
			t.Fatalf("At(%d) wrong", r)
		}
		if got, ok := x.Rank(model[r]); !ok || got != r {
			t.Fatalf("Rank(model[%d]) = %d, %v", r, got, ok)
		}
	}
}

func cmpKey(a, b Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Random inserts and deletes against a sorted-slice model, with the tree's
// invariants checked as it grows several levels deep and shrinks to empty.
func TestLeaderboardIndexMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x Index
	var model []Key
	seq := uint64(0)
	insert := func() {
		seq++
		k := Key{A: rng.Int64N(500) - 250, B: rng.Int64N(5), Seq: seq}
		r := x.Insert(k, 0)
		i, _ := slices.BinarySearchFunc(model, k, cmpKey)
		if r != i {
			t.Fatalf("Insert returned rank %d, want %d", r, i)
		}
		model = slices.Insert(model, i, k)
	}
	remove := func() {
		i := rng.IntN(len(model))
		if !x.Delete(model[i]) {
			t.Fatalf("Delete(%v) found nothing", model[i])
		}
		model = slices.Delete(model, i, i+1)
	}
	for round := 0; round < 3; round++ {
		for i := 0; i < 30000; i++ {
			if len(model) > 0 && rng.IntN(3) == 0 {
				remove()
			} else {
				insert()
			}
			if i%5000 == 0 {
				x.check(t, model)
			}
		}
		x.check(t, model)
		if x.root.level < 2 {
			t.Fatalf("tree only %d level deep; the test should exercise inner splits", x.root.level)
		}
		if x.Delete(Key{A: 1 << 40}) {
			t.Fatal("deleted a missing key")
		}
		// Drain, mostly from the front, to exercise merges and root shrinks.
		for len(model) > 0 {
			if rng.IntN(4) == 0 {
				remove()
			} else {
				if !x.Delete(model[0]) {
					t.Fatal("front delete failed")
				}
				model = model[1:]
			}
			if len(model)%7000 == 0 {
				x.check(t, model)
			}
		}
		x.check(t, model)
	}
}

func TestLeaderboardIndexRankOfAbsentKeysAndWalks(t *testing.T) {
	var x Index
	for i := int64(0); i < 1000; i++ {
		x.Insert(Key{A: i * 2, Seq: uint64(i + 1)}, 0)
	}
	// Odd A values are absent: the rank is the count below.
	for _, a := range []int64{-1, 1, 999, 1999, 5000} {
		r, found := x.Rank(Key{A: a})
		want := min(max((a+1)/2, 0), 1000)
		if found || int64(r) != want {
			t.Fatalf("Rank(%d) = %d,%v want %d", a, r, found, want)
		}
	}
	c, r := x.After(Key{A: 10, Seq: 6})
	if r != 6 || !c.Valid() || c.Key().A != 12 {
		t.Fatalf("After = rank %d key %v", r, c.Key())
	}
	n := 0
	for c := x.At(990); c.Valid(); c = c.Next() {
		n++
	}
	if n != 10 {
		t.Fatalf("walked %d records from rank 990", n)
	}
	if x.At(1000).Valid() || x.At(-1).Valid() {
		t.Fatal("cursor past the end is valid")
	}
}

// Deep enough for inner nodes above inner nodes to split and merge.
func TestLeaderboardIndexDeep(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var x Index
	keys := make([]Key, 0, 400000)
	for i := range 400000 {
		k := Key{A: rng.Int64N(1 << 40), Seq: uint64(i + 1)}
		keys = append(keys, k)
		x.Insert(k, 0)
	}
	if x.root.level < 3 {
		t.Fatalf("only %d levels", x.root.level)
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for _, k := range keys[:390000] {
		if !x.Delete(k) {
			t.Fatal("delete failed")
		}
	}
	keys = keys[390000:]
	slices.SortFunc(keys, cmpKey)
	x.check(t, keys)
	if x.root.level > 2 {
		t.Fatalf("tree of %d records still %d levels deep: merges did not shrink it", x.Len(), x.root.level)
	}
}

// Keys inserted in order (as a period loads from the store) and in
// reverse order build a valid tree too.
func TestLeaderboardIndexOrderedInserts(t *testing.T) {
	for _, reverse := range []bool{false, true} {
		var x Index
		var model []Key
		for i := range 5000 {
			k := Key{A: int64(i), Seq: uint64(i + 1)}
			if reverse {
				k.A = -k.A
			}
			r := x.Insert(k, uint32(i))
			want := i
			if reverse {
				want = 0
			}
			if r != want {
				t.Fatalf("reverse=%v: Insert %d returned rank %d", reverse, i, r)
			}
			model = append(model, k)
		}
		slices.SortFunc(model, cmpKey)
		x.check(t, model)
		leaves := 0
		for l := x.first; l != nil; l = l.next {
			leaves++
		}
		if !reverse && leaves > len(model)/leafCap+1 {
			t.Fatalf("%d keys appended in order fill %d leaves; want them full", len(model), leaves)
		}
		for c, i := x.At(0), 0; c.Valid(); c, i = c.Next(), i+1 {
			if want := model[i]; c.Key() != want {
				t.Fatalf("walk %d: %v want %v", i, c.Key(), want)
			}
			// Each key carries the ref it was inserted with.
			if want := uint32(c.Key().Seq - 1); c.Ref() != want {
				t.Fatalf("walk %d: ref %d, want %d", i, c.Ref(), want)
			}
		}
	}
}
