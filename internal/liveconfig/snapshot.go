package liveconfig

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// Snapshot is one accepted version of the configuration. It is never
// modified after Build, so any number of readers may share it.
type Snapshot struct {
	version     string
	source      string
	loaded      time.Time
	files       Files
	values      map[string]any // namespace.key -> value
	keys        []string       // sorted
	namespaces  []string       // sorted
	experiments []*Experiment  // releases, then experiments, by id

	protoOnce sync.Once
	proto     map[string]*structpb.Value
}

// Empty is the configuration before anything is loaded.
func Empty() *Snapshot {
	return &Snapshot{files: Files{}, values: map[string]any{}}
}

// Version is the commit id (git), the content hash (dir) or "" (empty).
func (s *Snapshot) Version() string { return s.version }

// Source is where the snapshot came from.
func (s *Snapshot) Source() string { return s.source }

// Loaded is when this node accepted it.
func (s *Snapshot) Loaded() time.Time { return s.loaded }

// Files returns the documents and schemas it was built from; do not modify
// them.
func (s *Snapshot) Files() Files { return s.files }

// Keys returns every value's namespaced key, sorted.
func (s *Snapshot) Keys() []string { return s.keys }

// Namespaces returns the document namespaces, sorted.
func (s *Snapshot) Namespaces() []string { return s.namespaces }

// Experiments returns the experiments and releases, releases first.
func (s *Snapshot) Experiments() []*Experiment { return s.experiments }

// Experiment returns the experiment or release with id.
func (s *Snapshot) Experiment(id string) *Experiment {
	for _, e := range s.experiments {
		if e.ID == id {
			return e
		}
	}
	return nil
}

// Value returns a base value (before releases and experiments). The value
// is shared: do not modify it.
func (s *Snapshot) Value(key string) (any, bool) {
	v, ok := s.values[key]
	return v, ok
}

// Resolve returns the configuration as player sees it at now: base values,
// then the releases and experiment variants the player is in.
func (s *Snapshot) Resolve(p Player, now time.Time) *Resolved {
	r := &Resolved{snap: s}
	for _, e := range s.experiments {
		i := e.assign(&p, now)
		if i < 0 {
			continue
		}
		v := &e.variants[i]
		r.Assignments = append(r.Assignments, Assignment{ID: e.ID, Variant: v.Name, Kind: e.Kind, Layer: e.Layer})
		for _, o := range v.overrides {
			r.apply(o)
		}
	}
	return r
}

// NextChange returns when a resolution may change without a new version
// (an experiment starts or ends, a ramp moves), or zero if never.
func (s *Snapshot) NextChange(now time.Time) time.Time {
	var next time.Time
	for _, e := range s.experiments {
		if t := e.nextChange(now); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// baseProto converts the base values once per snapshot; responses share
// them (they are only read).
func (s *Snapshot) baseProto() map[string]*structpb.Value {
	s.protoOnce.Do(func() {
		s.proto = make(map[string]*structpb.Value, len(s.values))
		for k, v := range s.values {
			pv, err := structpb.NewValue(v)
			if err != nil {
				pv = structpb.NewNullValue() // Build admits only JSON values
			}
			s.proto[k] = pv
		}
	})
	return s.proto
}

// override sets one value, or a place inside it.
type override struct {
	key   string   // namespace.key
	path  []string // inside the value; empty replaces it
	value any
}

// setPath returns root with value at path, copying every map on the way so
// that root itself is left untouched.
func setPath(root any, path []string, value any) any {
	if len(path) == 0 {
		return value
	}
	src, _ := root.(map[string]any)
	cp := make(map[string]any, len(src)+1)
	for k, v := range src {
		cp[k] = v
	}
	cp[path[0]] = setPath(src[path[0]], path[1:], value)
	return cp
}

// Resolved is the configuration one player sees. Its values are shared
// with the snapshot: read them, do not modify them.
type Resolved struct {
	snap        *Snapshot
	overlay     map[string]any
	Assignments []Assignment
}

func (r *Resolved) apply(o override) {
	cur, _ := r.Value(o.key)
	if r.overlay == nil {
		r.overlay = map[string]any{}
	}
	r.overlay[o.key] = setPath(cur, o.path, o.value)
}

// Version is the snapshot's version.
func (r *Resolved) Version() string { return r.snap.version }

// Snapshot is the version it was resolved from.
func (r *Resolved) Snapshot() *Snapshot { return r.snap }

// Keys returns every key, sorted.
func (r *Resolved) Keys() []string { return r.snap.keys }

// Value returns the value of key for this player.
func (r *Resolved) Value(key string) (any, bool) {
	if v, ok := r.overlay[key]; ok {
		return v, true
	}
	return r.snap.Value(key)
}

// Overridden reports whether a release or experiment changed key for this
// player.
func (r *Resolved) Overridden(key string) bool {
	_, ok := r.overlay[key]
	return ok
}

// Variant returns the player's variant of an experiment (or "on" for a
// release), if the player is in it.
func (r *Resolved) Variant(id string) (string, bool) {
	for _, a := range r.Assignments {
		if a.ID == id {
			return a.Variant, true
		}
	}
	return "", false
}

// Float returns a number at key (a dotted path may go inside objects:
// "economy.shop.discount"), or def if absent or not a number.
func (r *Resolved) Float(key string, def float64) float64 {
	if f, ok := r.lookup(key).(float64); ok {
		return f
	}
	return def
}

// Int is Float for integers; a non-integral number gives def.
func (r *Resolved) Int(key string, def int64) int64 {
	f, ok := r.lookup(key).(float64)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return def
	}
	return int64(f)
}

// Bool returns a boolean at key, or def.
func (r *Resolved) Bool(key string, def bool) bool {
	if b, ok := r.lookup(key).(bool); ok {
		return b
	}
	return def
}

// String returns a string at key, or def.
func (r *Resolved) String(key string, def string) string {
	if s, ok := r.lookup(key).(string); ok {
		return s
	}
	return def
}

// Decode unmarshals the value at key into out (a pointer), as
// encoding/json would; out gets its own copy.
func (r *Resolved) Decode(key string, out any) error {
	v := r.lookup(key)
	if v == nil {
		if _, ok := r.Value(key); !ok {
			return fmt.Errorf("liveconfig: no value %s", key)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// lookup finds key, or a dotted path inside a value.
func (r *Resolved) lookup(key string) any {
	if v, ok := r.Value(key); ok {
		return v
	}
	// The longest key that prefixes the path, then down into objects.
	for i := strings.LastIndexByte(key, '.'); i > 0; i = strings.LastIndexByte(key[:i], '.') {
		v, ok := r.Value(key[:i])
		if !ok {
			continue
		}
		for _, seg := range strings.Split(key[i+1:], ".") {
			m, isMap := v.(map[string]any)
			if !isMap {
				return nil
			}
			v = m[seg]
		}
		return v
	}
	return nil
}

// Select returns the keys that match any of patterns: a key itself or a
// namespace (every key under it). No patterns selects every key.
func (r *Resolved) Select(patterns []string) []string {
	if len(patterns) == 0 {
		return r.snap.keys
	}
	var out []string
	for _, k := range r.snap.keys {
		for _, p := range patterns {
			if k == p || strings.HasPrefix(k, p+".") {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// fingerprint changes whenever what the player sees changes.
func (r *Resolved) fingerprint() string {
	var sb strings.Builder
	sb.WriteString(r.snap.version)
	as := append([]Assignment(nil), r.Assignments...)
	sort.Slice(as, func(i, j int) bool { return as[i].ID < as[j].ID })
	for _, a := range as {
		sb.WriteString("|" + a.ID + "=" + a.Variant)
	}
	return sb.String()
}
