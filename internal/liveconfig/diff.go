package liveconfig

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Change is one difference between two snapshots.
type Change struct {
	// Op is "+" (added), "-" (removed) or "~" (changed).
	Op string
	// What is "value" or the kind of an experiment or release.
	What string
	// Key is the value's key or the experiment's id.
	Key    string
	Detail string
}

func (c Change) String() string {
	if c.Detail == "" {
		return fmt.Sprintf("%s %s %s", c.Op, c.What, c.Key)
	}
	return fmt.Sprintf("%s %s %s: %s", c.Op, c.What, c.Key, c.Detail)
}

// Diff lists what changes from a to b: values added, removed or changed,
// and experiments and releases added, removed or changed, with the share
// of players whose variant changes (rollouts evaluated at now).
func Diff(a, b *Snapshot, now time.Time) []Change {
	var out []Change
	for _, k := range unionKeys(a.keys, b.keys) {
		va, ina := a.values[k]
		vb, inb := b.values[k]
		switch {
		case !ina:
			out = append(out, Change{Op: "+", What: "value", Key: k, Detail: short(vb)})
		case !inb:
			out = append(out, Change{Op: "-", What: "value", Key: k, Detail: short(va)})
		case !reflect.DeepEqual(va, vb):
			out = append(out, Change{Op: "~", What: "value", Key: k, Detail: short(va) + " -> " + short(vb)})
		}
	}
	byID := func(s *Snapshot) map[string]*Experiment {
		m := map[string]*Experiment{}
		for _, e := range s.experiments {
			m[e.ID] = e
		}
		return m
	}
	ea, eb := byID(a), byID(b)
	var ids []string
	for id := range ea {
		ids = append(ids, id)
	}
	for id := range eb {
		if ea[id] == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		x, y := ea[id], eb[id]
		switch {
		case x == nil:
			out = append(out, Change{Op: "+", What: y.Kind.String(), Key: id, Detail: describe(y, now)})
		case y == nil:
			out = append(out, Change{Op: "-", What: x.Kind.String(), Key: id, Detail: describe(x, now)})
		default:
			if d := experimentDiff(x, y, now); d != "" {
				out = append(out, Change{Op: "~", What: y.Kind.String(), Key: id, Detail: d})
			}
		}
	}
	return out
}

func unionKeys(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range append(append([]string(nil), a...), b...) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func short(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 120 {
		return string(b[:117]) + "..."
	}
	return string(b)
}

func describe(e *Experiment, now time.Time) string {
	var parts []string
	for _, v := range e.variants {
		parts = append(parts, fmt.Sprintf("%s %v%%", v.Name, pct(v.Hi-v.Lo)))
	}
	s := strings.Join(parts, ", ")
	if e.Layer != "" {
		s += fmt.Sprintf("; layer %s [%v%%, %v%%)", e.Layer, pct(e.sliceFrom), pct(e.sliceTo))
	}
	return s + fmt.Sprintf("; rollout now %v%%", pct(e.rollout.at(now)))
}

// experimentDiff describes how y differs from x, and how many players
// that moves.
func experimentDiff(x, y *Experiment, now time.Time) string {
	var parts []string
	if x.seed != y.seed {
		parts = append(parts, "salt changed: every player is assigned anew")
	} else if moved := movedShare(x, y); moved > 0 {
		parts = append(parts, fmt.Sprintf("variants %s -> %s; %v%% of players change variant",
			weights(x), weights(y), pct(moved)))
	} else if weights(x) != weights(y) {
		parts = append(parts, fmt.Sprintf("variants %s -> %s", weights(x), weights(y)))
	}
	if x.Layer != y.Layer || x.sliceFrom != y.sliceFrom || x.sliceTo != y.sliceTo {
		parts = append(parts, fmt.Sprintf("layer %s [%v%%, %v%%) -> %s [%v%%, %v%%)",
			orNone(x.Layer), pct(x.sliceFrom), pct(x.sliceTo), orNone(y.Layer), pct(y.sliceFrom), pct(y.sliceTo)))
	}
	if ra, rb := x.rollout.at(now), y.rollout.at(now); ra != rb || !x.rollout.equal(y.rollout) {
		parts = append(parts, fmt.Sprintf("rollout now %v%% -> %v%%", pct(ra), pct(rb)))
	}
	if !x.start.Equal(y.start) || !x.end.Equal(y.end) {
		parts = append(parts, fmt.Sprintf("window %s -> %s", window(x), window(y)))
	}
	if !reflect.DeepEqual(x.target, y.target) {
		parts = append(parts, "targeting changed")
	}
	if !reflect.DeepEqual(x.force, y.force) {
		parts = append(parts, "forced players changed")
	}
	for i := range y.variants {
		if i < len(x.variants) && x.variants[i].Name == y.variants[i].Name &&
			!reflect.DeepEqual(x.variants[i].overrides, y.variants[i].overrides) {
			parts = append(parts, fmt.Sprintf("values of %s changed", y.variants[i].Name))
		}
	}
	return strings.Join(parts, "; ")
}

// movedShare counts the variant buckets whose variant name differs.
func movedShare(x, y *Experiment) int {
	name := func(e *Experiment, b int) string {
		for _, v := range e.variants {
			if b >= v.Lo && b < v.Hi {
				return v.Name
			}
		}
		return ""
	}
	moved := 0
	for b := 0; b < Buckets; b++ {
		if name(x, b) != name(y, b) {
			moved++
		}
	}
	return moved
}

func weights(e *Experiment) string {
	var parts []string
	for _, v := range e.variants {
		parts = append(parts, fmt.Sprintf("%s %v%%", v.Name, pct(v.Hi-v.Lo)))
	}
	return strings.Join(parts, ", ")
}

func window(e *Experiment) string {
	f := func(t time.Time) string {
		if t.IsZero() {
			return "open"
		}
		return t.UTC().Format(time.RFC3339)
	}
	return "[" + f(e.start) + ", " + f(e.end) + ")"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
