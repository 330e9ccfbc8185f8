package leaderboard

import "time"

// Record is one owner's standing on a board in one period.
type Record struct {
	Owner    string
	Username string
	Score    int64
	Subscore int64
	Metadata string
	// Rank is 1 for the first; 0 when not computed.
	Rank int64
	// Submits counts accepted writes, changed or not.
	Submits uint32
	// Seq orders records with equal score and subscore: the lower reached
	// that score first. It is unique within a period.
	Seq     uint64
	Created time.Time
	Updated time.Time
}

// Write is one submission.
type Write struct {
	Owner    string
	Username string
	Score    int64
	Subscore int64
	// Metadata replaces the stored metadata when the score is written;
	// empty keeps it.
	Metadata string
	// Operator overrides the board's; OpDefault uses it.
	Operator Operator
}

// Result is what one write did.
type Result struct {
	Record Record
	// Changed reports that score or subscore moved (or the record is new).
	Changed bool
	// Err is this write's own failure (a score driven out of range); the
	// other writes of a batch still apply.
	Err error
	// Period is the period written to.
	Period string
}

// Key orders the records of a period: ascending Key is rank order. For a
// descending board A and B are the negated score and subscore; Seq breaks
// the remaining ties by who reached the score first.
type Key struct {
	A, B int64
	Seq  uint64
}

// Less reports whether k ranks before o.
func (k Key) Less(o Key) bool {
	if k.A != o.A {
		return k.A < o.A
	}
	if k.B != o.B {
		return k.B < o.B
	}
	return k.Seq < o.Seq
}

func keyOf(sort SortOrder, score, sub int64, seq uint64) Key {
	if sort == Desc {
		return Key{A: -score, B: -sub, Seq: seq}
	}
	return Key{A: score, B: sub, Seq: seq}
}

// KeyOf returns the ordering key of r on a board sorted by sort.
func (r *Record) KeyOf(sort SortOrder) Key { return keyOf(sort, r.Score, r.Subscore, r.Seq) }

// errOutOfRange is a write's own error when its operator leaves the range.
var errOutOfRange = invalidf("score or subscore would leave ±(2^53 - 1)")

// combine applies op to the stored (score, sub) — had says whether a
// record exists — and a submitted one. It returns the new pair, whether
// the write's metadata should be taken, and an error when the result
// leaves the range. Both backends implement exactly this (the Redis one in
// Lua); the conformance suite holds them to it.
func combine(op Operator, sort SortOrder, had bool, oldScore, oldSub, score, sub int64) (newScore, newSub int64, take bool, err error) {
	switch op {
	case OpSet:
		newScore, newSub = score, sub
	case OpIncr:
		newScore, newSub = oldScore+score, oldSub+sub
	case OpDecr:
		newScore, newSub = oldScore-score, oldSub-sub
	default: // best
		if had && !better(sort, score, sub, oldScore, oldSub) {
			return oldScore, oldSub, false, nil
		}
		newScore, newSub = score, sub
	}
	// Inputs are within ±MaxScore, so these sums cannot wrap int64.
	if newScore > MaxScore || newScore < -MaxScore || newSub > MaxScore || newSub < -MaxScore {
		return oldScore, oldSub, false, errOutOfRange
	}
	return newScore, newSub, true, nil
}

func better(sort SortOrder, score, sub, oldScore, oldSub int64) bool {
	if sort == Desc {
		return score > oldScore || (score == oldScore && sub > oldSub)
	}
	return score < oldScore || (score == oldScore && sub < oldSub)
}

// aroundStart is the first rank index (0-based) of a window of limit
// records centred on index r of n, shifted to stay full at either end.
func aroundStart(r, n, limit int64) int64 {
	start := r - (limit-1)/2
	if start+limit > n {
		start = n - limit
	}
	return max(start, 0)
}
