package leaderboard

// Index is an order-statistic B+tree of records by Key: insert, delete,
// rank of a key and the key at a rank all take O(log n); walking on from a
// position is a step along the leaf chain. Inner nodes keep the size of
// each child's subtree, which is what makes ranks logarithmic. Wide nodes
// keep the tree shallow (five levels at ten million records) and its walks
// cache-friendly. Not safe for concurrent use.
type Index struct {
	root  *inner
	first *leaf
	size  int
}

const (
	leafCap  = nodeCap
	innerCap = nodeCap
	// A node below a quarter full merges with a neighbour when the two fit
	// in one.
	leafLow  = leafCap / 4
	innerLow = innerCap / 4
)

// keyArray holds a node's keys column by column: a search reads the A
// column (eight keys to a cache line) and looks at B and Seq only on ties.
type keyArray struct {
	a, b [nodeCap]int64
	s    [nodeCap]uint64
}

const nodeCap = 64

func (ka *keyArray) at(i int) Key { return Key{ka.a[i], ka.b[i], ka.s[i]} }

func (ka *keyArray) set(i int, k Key) { ka.a[i], ka.b[i], ka.s[i] = k.A, k.B, k.Seq }

// less reports whether key i is below k.
func (ka *keyArray) less(i int, k Key) bool {
	if a := ka.a[i]; a != k.A {
		return a < k.A
	}
	if b := ka.b[i]; b != k.B {
		return b < k.B
	}
	return ka.s[i] < k.Seq
}

// above reports whether key i is above k.
func (ka *keyArray) above(i int, k Key) bool {
	if a := ka.a[i]; a != k.A {
		return a > k.A
	}
	if b := ka.b[i]; b != k.B {
		return b > k.B
	}
	return ka.s[i] > k.Seq
}

// copyKeys copies n keys from src[from:] to dst[to:] (overlap allowed).
func copyKeys(dst *keyArray, to int, src *keyArray, from, n int) {
	copy(dst.a[to:to+n], src.a[from:from+n])
	copy(dst.b[to:to+n], src.b[from:from+n])
	copy(dst.s[to:to+n], src.s[from:from+n])
}

// A leaf keeps keys apart from the references they carry, so a search
// reads only keys; and it holds no pointers but its links, so moving items
// costs no GC write barriers and the collector skips the arrays.
type leaf struct {
	n          int
	keys       keyArray
	refs       [leafCap]uint32
	prev, next *leaf
}

// inner is a node above the leaves. keys[i] is at most every key under
// child i, and every key under child i is below keys[i+1].
type inner struct {
	n      int
	level  int // 1: the children are leaves
	keys   keyArray
	counts [innerCap]int32 // subtree sizes: a period holds under 2^31 records
	kids   [innerCap]*inner
	leaves [innerCap]*leaf
}

// Len returns the number of records.
func (x *Index) Len() int { return x.size }

// child returns the child of n whose range holds k.
func (n *inner) child(k Key) int {
	lo, hi := 1, n.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if n.keys.above(m, k) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo - 1
}

func (n *inner) total() int {
	t := 0
	for i := 0; i < n.n; i++ {
		t += int(n.counts[i])
	}
	return t
}

// search returns the position of the first item not below k and whether
// it is k. It counts the A column's values below k.A instead of bisecting:
// a branch-free pass over eight cache lines the processor fetches ahead
// beats six dependent, mispredicted probes. (Keys are within ±2^53, so
// the difference cannot overflow.) Ties on A are rare and stepped over.
func (l *leaf) search(k Key) (int, bool) {
	j := 0
	for _, a := range l.keys.a[:l.n] {
		j += int(uint64(a-k.A) >> 63)
	}
	for j < l.n && l.keys.a[j] == k.A && l.keys.less(j, k) {
		j++
	}
	return j, j < l.n && l.keys.at(j) == k
}

// Insert adds k carrying ref and returns its 0-based rank; k must not be
// present (keys carry a unique Seq).
func (x *Index) Insert(k Key, ref uint32) int {
	if x.root == nil || x.root.n == 0 {
		l := &leaf{n: 1}
		l.keys.set(0, k)
		l.refs[0] = ref
		x.root = &inner{level: 1, n: 1}
		x.root.leaves[0], x.root.counts[0] = l, 1
		x.root.keys.set(0, k)
		x.first, x.size = l, 1
		return 0
	}
	rank := 0
	if sep, right, moved := x.insert(x.root, k, ref, &rank); right != nil {
		old := x.root
		r := &inner{level: old.level + 1, n: 2}
		r.kids[0], r.counts[0] = old, int32(x.size+1-moved)
		r.kids[1], r.counts[1] = right, int32(moved)
		r.keys.set(0, old.keys.at(0))
		r.keys.set(1, sep)
		x.root = r
	}
	x.size++
	return rank
}

// insert adds k under n, adding to *rank the keys below it. When n splits
// it returns the new right sibling, its separator and how many records
// moved to it.
func (x *Index) insert(n *inner, k Key, ref uint32, rank *int) (Key, *inner, int) {
	i := n.child(k)
	if n.keys.above(i, k) {
		n.keys.set(i, k) // only ever child 0: k is below everything here
	}
	for j := 0; j < i; j++ {
		*rank += int(n.counts[j])
	}
	if n.level == 1 {
		l := n.leaves[i]
		j, _ := l.search(k)
		*rank += j
		if l.n < leafCap {
			l.insertAt(j, k, ref)
			n.counts[i]++
			return Key{}, nil, 0
		}
		// Appending past the last key (a period loading in key order)
		// leaves the full leaf full and starts a new one; anywhere else the
		// leaf splits in half.
		appending := j == l.n && l.next == nil
		half := leafCap / 2
		if appending {
			half = leafCap
		}
		r := x.splitLeaf(l, half)
		if j < l.n || (j == l.n && !appending) {
			l.insertAt(j, k, ref)
		} else {
			r.insertAt(j-l.n, k, ref)
		}
		n.counts[i] = int32(l.n)
		return n.addChild(i+1, r.keys.at(0), nil, r, r.n, appending)
	}
	sep, right, moved := x.insert(n.kids[i], k, ref, rank)
	n.counts[i]++
	if right == nil {
		return Key{}, nil, 0
	}
	n.counts[i] -= int32(moved)
	return n.addChild(i+1, sep, right, nil, moved, i+1 == n.n && right.n == 1)
}

// addChild puts a child at position i, splitting n first when it is full:
// in half, or, when appending at the end, by starting a new node with only
// the new child.
func (n *inner) addChild(i int, sep Key, kid *inner, lf *leaf, count int, appending bool) (Key, *inner, int) {
	if n.n < innerCap {
		n.insertChild(i, sep, kid, lf, count)
		return Key{}, nil, 0
	}
	if appending && i == n.n {
		r := &inner{level: n.level}
		r.insertChild(0, sep, kid, lf, count)
		return sep, r, count
	}
	half := innerCap / 2
	r := &inner{level: n.level, n: innerCap - half}
	copyKeys(&r.keys, 0, &n.keys, half, n.n-half)
	copy(r.counts[:], n.counts[half:n.n])
	copy(r.kids[:], n.kids[half:n.n])
	copy(r.leaves[:], n.leaves[half:n.n])
	clear(n.kids[half:n.n])
	clear(n.leaves[half:n.n])
	n.n = half
	if i <= half {
		n.insertChild(i, sep, kid, lf, count)
	} else {
		r.insertChild(i-half, sep, kid, lf, count)
	}
	return r.keys.at(0), r, r.total()
}

func (n *inner) insertChild(i int, sep Key, kid *inner, lf *leaf, count int) {
	copyKeys(&n.keys, i+1, &n.keys, i, n.n-i)
	copy(n.counts[i+1:n.n+1], n.counts[i:n.n])
	copy(n.kids[i+1:n.n+1], n.kids[i:n.n])
	copy(n.leaves[i+1:n.n+1], n.leaves[i:n.n])
	n.counts[i], n.kids[i], n.leaves[i] = int32(count), kid, lf
	n.keys.set(i, sep)
	n.n++
}

func (n *inner) removeChild(i int) {
	copyKeys(&n.keys, i, &n.keys, i+1, n.n-i-1)
	copy(n.counts[i:], n.counts[i+1:n.n])
	copy(n.kids[i:], n.kids[i+1:n.n])
	copy(n.leaves[i:], n.leaves[i+1:n.n])
	n.n--
	n.kids[n.n], n.leaves[n.n] = nil, nil
}

func (l *leaf) insertAt(j int, k Key, ref uint32) {
	copyKeys(&l.keys, j+1, &l.keys, j, l.n-j)
	copy(l.refs[j+1:l.n+1], l.refs[j:l.n])
	l.keys.set(j, k)
	l.refs[j] = ref
	l.n++
}

func (l *leaf) removeAt(j int) {
	copyKeys(&l.keys, j, &l.keys, j+1, l.n-j-1)
	copy(l.refs[j:], l.refs[j+1:l.n])
	l.n--
}

// splitLeaf moves l's items from half on to a new leaf after it.
func (x *Index) splitLeaf(l *leaf, half int) *leaf {
	r := &leaf{n: l.n - half, prev: l, next: l.next}
	copyKeys(&r.keys, 0, &l.keys, half, l.n-half)
	copy(r.refs[:], l.refs[half:l.n])
	l.n = half
	if l.next != nil {
		l.next.prev = r
	}
	l.next = r
	return r
}

func (x *Index) unlink(l *leaf) {
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		x.first = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	}
	l.prev, l.next = nil, nil
}

// Delete removes k and reports whether it was present.
func (x *Index) Delete(k Key) bool {
	if x.size == 0 || !x.delete(x.root, k) {
		return false
	}
	x.size--
	if x.size == 0 {
		x.root, x.first = nil, nil
		return true
	}
	for x.root.level > 1 && x.root.n == 1 {
		x.root = x.root.kids[0]
	}
	return true
}

func (x *Index) delete(n *inner, k Key) bool {
	i := n.child(k)
	if n.level == 1 {
		l := n.leaves[i]
		j, found := l.search(k)
		if !found {
			return false
		}
		l.removeAt(j)
		n.counts[i]--
		if l.n == 0 {
			x.unlink(l)
			n.removeChild(i)
		} else if l.n < leafLow {
			x.mergeLeaf(n, i)
		}
		return true
	}
	c := n.kids[i]
	if !x.delete(c, k) {
		return false
	}
	n.counts[i]--
	if c.n == 0 {
		n.removeChild(i)
	} else if c.n < innerLow {
		mergeInner(n, i)
	}
	return true
}

// mergeLeaf folds the small leaf i of n into a neighbour that has room.
func (x *Index) mergeLeaf(n *inner, i int) {
	if i+1 < n.n && n.leaves[i].n+n.leaves[i+1].n <= leafCap {
		i++ // fold the right neighbour into this one
	} else if i == 0 || n.leaves[i-1].n+n.leaves[i].n > leafCap {
		return
	}
	l, r := n.leaves[i-1], n.leaves[i]
	copyKeys(&l.keys, l.n, &r.keys, 0, r.n)
	copy(l.refs[l.n:], r.refs[:r.n])
	l.n += r.n
	x.unlink(r)
	n.counts[i-1] += n.counts[i]
	n.removeChild(i)
}

// mergeInner folds the small child i of n into a neighbour that has room.
func mergeInner(n *inner, i int) {
	if i+1 < n.n && n.kids[i].n+n.kids[i+1].n <= innerCap {
		i++
	} else if i == 0 || n.kids[i-1].n+n.kids[i].n > innerCap {
		return
	}
	l, r := n.kids[i-1], n.kids[i]
	copyKeys(&l.keys, l.n, &r.keys, 0, r.n)
	copy(l.counts[l.n:], r.counts[:r.n])
	copy(l.kids[l.n:], r.kids[:r.n])
	copy(l.leaves[l.n:], r.leaves[:r.n])
	l.n += r.n
	n.counts[i-1] += n.counts[i]
	n.removeChild(i)
}

// Rank returns how many keys are below k and whether k is present: for a
// present key, its 0-based rank.
func (x *Index) Rank(k Key) (int, bool) {
	if x.size == 0 {
		return 0, false
	}
	n, r := x.root, 0
	for {
		i := n.child(k)
		for j := 0; j < i; j++ {
			r += int(n.counts[j])
		}
		if n.level == 1 {
			j, found := n.leaves[i].search(k)
			return r + j, found
		}
		n = n.kids[i]
	}
}

// Cursor is a position in the Index; it is valid until the next change.
type Cursor struct {
	l *leaf
	j int
}

// Valid reports whether the cursor is on a record.
func (c Cursor) Valid() bool { return c.l != nil && c.j < c.l.n }

// Key returns the key at the cursor.
func (c Cursor) Key() Key { return c.l.keys.at(c.j) }

// Ref returns the reference the record at the cursor carries.
func (c Cursor) Ref() uint32 { return c.l.refs[c.j] }

// Next moves to the following record.
func (c Cursor) Next() Cursor {
	if c.j+1 < c.l.n {
		return Cursor{c.l, c.j + 1}
	}
	return Cursor{c.l.next, 0}
}

// At returns a cursor on the record of 0-based rank r (invalid past the
// end).
func (x *Index) At(r int) Cursor {
	if r < 0 || r >= x.size {
		return Cursor{}
	}
	n := x.root
	for {
		i := 0
		for ; i < n.n-1 && r >= int(n.counts[i]); i++ {
			r -= int(n.counts[i])
		}
		if n.level == 1 {
			return Cursor{n.leaves[i], r}
		}
		n = n.kids[i]
	}
}

// After returns a cursor on the first record whose key is above k, and
// that record's 0-based rank.
func (x *Index) After(k Key) (Cursor, int) {
	r, found := x.Rank(k)
	if found {
		r++
	}
	return x.At(r), r
}
