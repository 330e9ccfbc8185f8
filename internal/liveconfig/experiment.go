package liveconfig

import (
	"strings"
	"time"
)

// Buckets is the resolution of every split: a player falls in one of
// Buckets buckets, so percentages have two decimals.
const Buckets = 10000

// Bucket places a player for one purpose (a layer, an experiment's rollout
// or its variants) in [0, Buckets). It depends only on its arguments, so
// every node and every restart agrees: 64-bit FNV-1a over purpose, key and
// player id (each followed by a zero byte), then the MurmurHash3
// finaliser, whose avalanche spreads sequential ids evenly, modulo Buckets.
func Bucket(purpose, key, playerID string) int {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, s := range [3]string{purpose, key, playerID} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * prime
		}
		h *= prime // the zero byte: "ab"+"c" and "a"+"bc" differ
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return int(h % Buckets)
}

// Experiment is a compiled experiment or gray release.
type Experiment struct {
	ID          string
	Kind        Kind
	Layer       string
	Description string
	// File is the document it was declared in.
	File string

	seed       string // the hashing key: the salt, else the id
	sliceFrom  int    // layer buckets [sliceFrom, sliceTo) belong to it
	sliceTo    int
	start, end time.Time // zero: unbounded
	rollout    ramp
	target     target
	variants   []variant
	force      map[string]int // player id -> variant index
}

// Variant is one arm of an experiment: its name and the share of the
// experiment's players it takes, in buckets [Lo, Hi).
type Variant struct {
	Name   string
	Lo, Hi int
}

type variant struct {
	Variant
	overrides []override
}

// Variants returns the experiment's arms in order.
func (e *Experiment) Variants() []Variant {
	out := make([]Variant, len(e.variants))
	for i, v := range e.variants {
		out[i] = v.Variant
	}
	return out
}

// Window returns the start and end (zero when unbounded).
func (e *Experiment) Window() (start, end time.Time) { return e.start, e.end }

// LayerSlice returns the layer buckets [from, to) the experiment uses.
func (e *Experiment) LayerSlice() (from, to int) { return e.sliceFrom, e.sliceTo }

// RolloutAt returns the share of targeted players in the experiment at t,
// in buckets.
func (e *Experiment) RolloutAt(t time.Time) int { return e.rollout.at(t) }

// ramp is a rollout: a fixed share, or a linear ramp from one share to
// another over a window. Shares are in buckets.
type ramp struct {
	from, to   int
	start, end time.Time // zero for a fixed share
}

func (r ramp) at(t time.Time) int {
	if r.start.IsZero() || !t.After(r.start) {
		return r.from
	}
	if !t.Before(r.end) {
		return r.to
	}
	frac := float64(t.Sub(r.start)) / float64(r.end.Sub(r.start))
	return r.from + int(frac*float64(r.to-r.from))
}

func (r ramp) equal(o ramp) bool {
	return r.from == o.from && r.to == o.to && r.start.Equal(o.start) && r.end.Equal(o.end)
}

// target is who an experiment may include; empty fields match everyone.
type target struct {
	regions, devices, platforms set
	cohorts, excludeCohorts     set
	players, excludePlayers     map[string]bool
	appVersion                  versionRange
}

// set matches case-insensitively.
type set map[string]bool

func newSet(items []string) set {
	if len(items) == 0 {
		return nil
	}
	s := set{}
	for _, it := range items {
		s[strings.ToLower(it)] = true
	}
	return s
}

func (s set) has(v string) bool { return s[strings.ToLower(v)] }

func (s set) any(vs []string) bool {
	for _, v := range vs {
		if s.has(v) {
			return true
		}
	}
	return false
}

func (t *target) match(p *Player) bool {
	switch {
	case t.players != nil && !t.players[p.ID],
		t.excludePlayers[p.ID],
		t.regions != nil && !t.regions.has(p.Region),
		t.devices != nil && !t.devices.has(p.Device),
		t.platforms != nil && !t.platforms.has(p.Platform),
		t.cohorts != nil && !t.cohorts.any(p.Cohorts),
		t.excludeCohorts.any(p.Cohorts),
		t.appVersion != nil && !t.appVersion.match(p.AppVersion):
		return false
	}
	return true
}

// assign returns the index of the player's variant, or -1 when the player
// is not in the experiment at now. The steps are independent hashes, so
// each stays sticky on its own: a growing rollout keeps everyone already
// in, and the variant a player gets does not depend on the rollout.
func (e *Experiment) assign(p *Player, now time.Time) int {
	if i, ok := e.force[p.ID]; ok {
		return i
	}
	if p.ID == "" {
		return -1
	}
	if !e.start.IsZero() && now.Before(e.start) || !e.end.IsZero() && !now.Before(e.end) {
		return -1
	}
	if !e.target.match(p) {
		return -1
	}
	if e.Layer != "" {
		if b := Bucket("layer", e.Layer, p.ID); b < e.sliceFrom || b >= e.sliceTo {
			return -1
		}
	}
	if Bucket("rollout", e.seed, p.ID) >= e.rollout.at(now) {
		return -1
	}
	b := Bucket("variant", e.seed, p.ID)
	for i, v := range e.variants {
		if b >= v.Lo && b < v.Hi {
			return i
		}
	}
	return -1
}

// nextChange returns when the experiment's effect may next change after
// now without a new version (a start, an end, a ramp step), or zero.
func (e *Experiment) nextChange(now time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(e.start)
	consider(e.end)
	r := e.rollout
	if !r.start.IsZero() {
		consider(r.start)
		consider(r.end)
		if now.After(r.start) && now.Before(r.end) && r.from != r.to {
			// One bucket of ramp, but not more often than once a second.
			step := r.end.Sub(r.start) / time.Duration(abs(r.to-r.from))
			consider(now.Add(max(step, time.Second)))
		}
	}
	return next
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
