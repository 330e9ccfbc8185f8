package match

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultRules are the queues Rally ships with; a rules file from config
// replaces them.
//
//go:embed rules.default.yaml
var DefaultRules []byte

// Rules are the matchmaking queues.
type Rules struct {
	Queues []*Queue `yaml:"queues"`
}

// Queue is one queue's rules.
type Queue struct {
	Name string `yaml:"name"`
	// Teams and TeamSize shape a team match (1v1: 2 × 1, 5v5: 2 × 5).
	Teams    int `yaml:"teams"`
	TeamSize int `yaml:"team_size"`
	// FreeForAll, when set, makes a match of Min..Max single-player teams
	// instead.
	FreeForAll *FreeForAll `yaml:"free_for_all"`
	// Party bounds the players one ticket may bring.
	Party Range `yaml:"party"`
	// Rating is the rating window: tickets within Window of the oldest
	// ticket's rating may be matched; it widens with the oldest's wait.
	Rating Widening `yaml:"rating"`
	// Latency is the highest latency any player may have to the match's
	// region, widening with wait. Zero: regions are ignored.
	Latency Widening `yaml:"latency_ms"`
	// GeoKM is the largest distance between players who gave a position,
	// widening with wait. Zero: positions are ignored.
	GeoKM Widening `yaml:"geo_km"`
	// Same lists string attributes whose values must be equal across a
	// match (game mode, map); tickets are pooled by them.
	Same []string `yaml:"same"`
	// Filters admit tickets to the queue.
	Filters []Filter `yaml:"filters"`
	// MaxWait ends a ticket with an expired outcome.
	MaxWait Duration `yaml:"max_wait"`
	// Backfill would let a running room take players; the built-in
	// allocator always makes a new room, so true is refused rather than
	// silently ignored.
	Backfill bool `yaml:"backfill"`
	// Handler is the room logic the built-in allocator starts.
	Handler string `yaml:"handler"`
	// Results says who may report a match's result.
	Results ResultRules `yaml:"results"`
}

// ResultRules say whose report rates a match. A report with the match's
// result token (a game server, or server code) always counts at once.
type ResultRules struct {
	// Reporter is "players" (the default: every team reports, and the
	// match is rated when all reports agree) or "server" (only the game
	// server or server code; player reports are refused).
	Reporter string `yaml:"reporter"`
	// Deadline bounds how long after the first player report the other
	// teams may report (default 10m).
	Deadline Duration `yaml:"deadline"`
	// OnTimeout decides a match whose teams did not all report by the
	// deadline: "void" (the default: nobody is rated) or "reported" (rate
	// by the reports in, when they agree).
	OnTimeout string `yaml:"on_timeout"`
}

// FreeForAll sizes a free-for-all match: it waits up to FillFor for Max
// players, then starts with at least Min.
type FreeForAll struct {
	Min     int      `yaml:"min"`
	Max     int      `yaml:"max"`
	FillFor Duration `yaml:"fill_for"`
}

// Range is an inclusive integer range.
type Range struct {
	Min int `yaml:"min"`
	Max int `yaml:"max"`
}

// Widening is a limit that grows in steps with a ticket's wait.
type Widening struct {
	Initial float64 `yaml:"initial"`
	Steps   []Step  `yaml:"widen"`
}

// Step applies Value once a ticket has waited After.
type Step struct {
	After Duration `yaml:"after"`
	Value float64  `yaml:"value"`
}

// At returns the limit after waiting w, and the index of the step in force
// (-1 before the first step).
func (wd Widening) At(w time.Duration) (float64, int) {
	v, idx := wd.Initial, -1
	for i, s := range wd.Steps {
		if w >= s.After.D() {
			v, idx = s.Value, i
		}
	}
	return v, idx
}

// Filter admits a ticket by one attribute.
type Filter struct {
	Attribute string   `yaml:"attribute"`
	Must      []string `yaml:"must"`     // the string value must be one of these
	MustNot   []string `yaml:"must_not"` // ... and none of these
	Min       *float64 `yaml:"min"`      // the number must be at least
	Max       *float64 `yaml:"max"`      // ... and at most
}

// Duration reads "5s"-style YAML.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 5s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// ParseRules reads rules YAML strictly (unknown fields are errors) and
// validates them; errors name the queue and the field.
func ParseRules(b []byte) (*Rules, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r Rules
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("match rules: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// LoadRules reads a rules file, or the defaults when path is empty.
func LoadRules(path string) (*Rules, error) {
	if path == "" {
		return ParseRules(DefaultRules)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("match rules: %w", err)
	}
	r, err := ParseRules(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Validate checks every queue.
func (r *Rules) Validate() error {
	if len(r.Queues) == 0 {
		return errors.New("match rules: no queues")
	}
	seen := map[string]bool{}
	for i, q := range r.Queues {
		if q == nil || q.Name == "" {
			return fmt.Errorf("match rules: queues[%d].name: required", i)
		}
		if seen[q.Name] {
			return fmt.Errorf("match rules: queue %q defined twice", q.Name)
		}
		seen[q.Name] = true
		if err := q.validate(); err != nil {
			return fmt.Errorf("match rules: queue %q: %w", q.Name, err)
		}
	}
	return nil
}

func (q *Queue) validate() error {
	if q.FreeForAll != nil {
		if q.Teams != 0 || q.TeamSize != 0 {
			return errors.New("teams/team_size: not with free_for_all")
		}
		if q.FreeForAll.Min < 2 || q.FreeForAll.Max < q.FreeForAll.Min || q.FreeForAll.Max > 100 {
			return fmt.Errorf("free_for_all: want 2 <= min <= max <= 100, got %d..%d", q.FreeForAll.Min, q.FreeForAll.Max)
		}
	} else {
		if q.Teams < 2 || q.Teams > 16 {
			return fmt.Errorf("teams: want 2-16, got %d", q.Teams)
		}
		if q.TeamSize < 1 || q.TeamSize > 50 {
			return fmt.Errorf("team_size: want 1-50, got %d", q.TeamSize)
		}
	}
	if q.Party.Min == 0 {
		q.Party.Min = 1
	}
	if q.Party.Max == 0 {
		q.Party.Max = 1
	}
	maxParty := q.TeamSize
	if q.FreeForAll != nil {
		maxParty = 1
	}
	if q.Party.Min < 1 || q.Party.Max < q.Party.Min || q.Party.Max > maxParty {
		return fmt.Errorf("party: want 1 <= min <= max <= %d (a team), got %d..%d", maxParty, q.Party.Min, q.Party.Max)
	}
	for name, w := range map[string]Widening{"rating": q.Rating, "latency_ms": q.Latency, "geo_km": q.GeoKM} {
		if err := w.validate(); err != nil {
			return fmt.Errorf("%s.%w", name, err)
		}
	}
	if q.Rating.Initial <= 0 {
		return fmt.Errorf("rating.initial: must be positive, got %v", q.Rating.Initial)
	}
	for i, f := range q.Filters {
		if f.Attribute == "" {
			return fmt.Errorf("filters[%d].attribute: required", i)
		}
		if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
			return fmt.Errorf("filters[%d]: min %v above max %v", i, *f.Min, *f.Max)
		}
	}
	if q.MaxWait <= 0 {
		return fmt.Errorf("max_wait: must be positive")
	}
	if q.Backfill {
		return errors.New("backfill: not supported yet (the built-in allocator always makes a new room)")
	}
	if q.Handler == "" {
		q.Handler = "arena"
	}
	if err := q.Results.validate(); err != nil {
		return fmt.Errorf("results.%w", err)
	}
	sort.Strings(q.Same)
	return nil
}

func (w Widening) validate() error {
	if w.Initial < 0 {
		return fmt.Errorf("initial: must not be negative")
	}
	prevAfter, prevValue := time.Duration(0), w.Initial
	for i, s := range w.Steps {
		if s.After.D() <= prevAfter {
			return fmt.Errorf("widen[%d].after: must be later than the step before", i)
		}
		if s.Value < prevValue {
			return fmt.Errorf("widen[%d].value: must not narrow (%v after %v)", i, s.Value, prevValue)
		}
		prevAfter, prevValue = s.After.D(), s.Value
	}
	return nil
}

// Players returns how many players a full match of the queue seats, and
// the fewest it may start with.
func (q *Queue) Players() (max, min int) {
	if q.FreeForAll != nil {
		return q.FreeForAll.Max, q.FreeForAll.Min
	}
	return q.Teams * q.TeamSize, q.Teams * q.TeamSize
}

// admit checks a ticket against the queue's party and filter rules.
func (q *Queue) admit(t *Ticket) error {
	if n := len(t.Players); n < q.Party.Min || n > q.Party.Max {
		return fmt.Errorf("queue %s takes parties of %d-%d players, got %d", q.Name, q.Party.Min, q.Party.Max, n)
	}
	for _, f := range q.Filters {
		if len(f.Must) > 0 || len(f.MustNot) > 0 {
			v, ok := t.Strings[f.Attribute]
			if len(f.Must) > 0 && (!ok || !contains(f.Must, v)) {
				return fmt.Errorf("queue %s: attribute %s must be one of %v", q.Name, f.Attribute, f.Must)
			}
			if ok && contains(f.MustNot, v) {
				return fmt.Errorf("queue %s: attribute %s must not be %q", q.Name, f.Attribute, v)
			}
		}
		if f.Min != nil || f.Max != nil {
			v, ok := t.Numbers[f.Attribute]
			if !ok || (f.Min != nil && v < *f.Min) || (f.Max != nil && v > *f.Max) {
				return fmt.Errorf("queue %s: attribute %s must be within the queue's range", q.Name, f.Attribute)
			}
		}
	}
	for _, a := range q.Same {
		if _, ok := t.Strings[a]; !ok {
			return fmt.Errorf("queue %s: attribute %s is required", q.Name, a)
		}
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (r *ResultRules) validate() error {
	switch r.Reporter {
	case "":
		r.Reporter = "players"
	case "players", "server":
	default:
		return fmt.Errorf("reporter: want players or server, got %q", r.Reporter)
	}
	switch r.OnTimeout {
	case "":
		r.OnTimeout = "void"
	case "void", "reported":
	default:
		return fmt.Errorf("on_timeout: want void or reported, got %q", r.OnTimeout)
	}
	if r.Deadline < 0 {
		return errors.New("deadline: must not be negative")
	}
	if r.Deadline == 0 {
		r.Deadline = Duration(10 * time.Minute)
	}
	return nil
}
