// Package leaderboard ranks players on boards: submissions combined by an
// operator, rankings read by rank, around a player or for a list of
// players, and periods that reset on a cron schedule and stay readable
// afterwards. It keeps records in a Backend: an in-memory order-statistic
// index made durable by the store (embedded), or Redis sorted sets.
package leaderboard

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
)

// Errors the Service returns, wrapped with the detail; the gRPC layer maps
// them to status codes.
var (
	ErrInvalid      = errors.New("invalid argument")
	ErrNotFound     = errors.New("not found")
	ErrPermission   = errors.New("permission denied")
	ErrPrecondition = errors.New("failed precondition")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("leaderboard: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// MaxScore bounds scores and subscores: ±(2^53 - 1), which JSON numbers
// and Redis (whose Lua numbers are doubles) carry exactly.
const MaxScore = 1<<53 - 1

// Limits on identifiers and pages.
const (
	MaxOwnerBytes    = 128
	MaxUsernameBytes = 128
	MaxPageSize      = 100
	DefaultPageSize  = 10
	// MaxOwnersPerRequest bounds Records.
	MaxOwnersPerRequest = 100
	// AllPeriod is the one period of a board that never resets.
	AllPeriod = "all"
)

// SortOrder says which scores rank first.
type SortOrder uint8

// Sort orders.
const (
	Desc SortOrder = iota // higher first (the default)
	Asc                   // lower first
)

func (s SortOrder) String() string {
	if s == Asc {
		return "asc"
	}
	return "desc"
}

// ParseSortOrder reads "desc" (or "") and "asc".
func ParseSortOrder(s string) (SortOrder, error) {
	switch strings.ToLower(s) {
	case "", "desc":
		return Desc, nil
	case "asc":
		return Asc, nil
	}
	return 0, invalidf("sort %q is not one of desc, asc", s)
}

// Operator says how a submitted score combines with the stored one.
type Operator uint8

// Operators. The zero value means "the board's operator" on a write and
// Best on a board.
const (
	OpDefault Operator = iota
	OpBest
	OpSet
	OpIncr
	OpDecr
)

var opNames = [...]string{"", "best", "set", "incr", "decr"}

func (o Operator) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("operator(%d)", o)
}

// ParseOperator reads best, set, incr or decr ("" is OpDefault).
func ParseOperator(s string) (Operator, error) {
	for i, n := range opNames {
		if strings.EqualFold(s, n) {
			return Operator(i), nil
		}
	}
	return 0, invalidf("operator %q is not one of best, set, incr, decr", s)
}

// Board is a leaderboard's definition.
type Board struct {
	ID       string
	Sort     SortOrder
	Operator Operator
	// Reset is a cron schedule (five fields or a descriptor such as
	// @weekly); empty never resets.
	Reset string
	// TimeZone is the IANA zone the schedule is read in; empty is UTC.
	TimeZone string
	// Authoritative boards refuse writes from players; server code writes.
	Authoritative bool
	Metadata      map[string]string
	// Created is when the board was first created.
	Created time.Time
	// Since is when the current reset schedule took effect: periods are
	// counted from it, so every node computes the same ones.
	Since time.Time
}

var boardID = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// cronParser reads five-field schedules and descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate checks the definition and returns its parsed schedule (nil
// when it never resets).
func (b *Board) Validate() (cron.Schedule, error) {
	if !boardID.MatchString(b.ID) {
		return nil, invalidf("board id %q: want 1-64 characters of A-Z a-z 0-9 _ . -", b.ID)
	}
	if b.Sort > Asc {
		return nil, invalidf("board %s: unknown sort order %d", b.ID, b.Sort)
	}
	if b.Operator > OpDecr {
		return nil, invalidf("board %s: unknown operator %d", b.ID, b.Operator)
	}
	for k, v := range b.Metadata {
		if len(k) == 0 || len(k) > 64 || len(v) > 1024 {
			return nil, invalidf("board %s: metadata keys are 1-64 bytes and values at most 1024", b.ID)
		}
	}
	if b.Reset == "" {
		if b.TimeZone != "" {
			return nil, invalidf("board %s: time_zone without a reset schedule", b.ID)
		}
		return nil, nil
	}
	if strings.Contains(b.Reset, "TZ=") {
		return nil, invalidf("board %s: give the time zone in time_zone, not in the schedule", b.ID)
	}
	loc := time.UTC
	if b.TimeZone != "" {
		l, err := time.LoadLocation(b.TimeZone)
		if err != nil {
			return nil, invalidf("board %s: time_zone %q: %v", b.ID, b.TimeZone, err)
		}
		loc = l
	}
	sched, err := cronParser.Parse(b.Reset)
	if err != nil {
		return nil, invalidf("board %s: reset %q: %v", b.ID, b.Reset, err)
	}
	if s, ok := sched.(*cron.SpecSchedule); ok {
		s.Location = loc
	}
	// A schedule that never fires (February 30th) would make one endless
	// period silently; refuse it.
	if sched.Next(time.Now()).IsZero() {
		return nil, invalidf("board %s: reset %q never fires", b.ID, b.Reset)
	}
	return sched, nil
}

// clone returns a copy that shares no map with b.
func (b Board) clone() Board {
	b.Metadata = maps.Clone(b.Metadata)
	return b
}

// sameSchedule reports whether two definitions reset at the same times.
func (b *Board) sameSchedule(o *Board) bool {
	return b.Reset == o.Reset && b.TimeZone == o.TimeZone
}

// Period is one stretch of a board between two resets.
type Period struct {
	ID    string
	Start time.Time
	// End is zero for a period that never ends.
	End time.Time
}

// periodID names a period by its start, in UTC to the second.
func periodID(start time.Time) string { return start.UTC().Format("20060102T150405Z") }

var periodPattern = regexp.MustCompile(`^(all|[0-9]{8}T[0-9]{6}Z)$`)

func validPeriodID(id string) bool { return periodPattern.MatchString(id) }

// validOwner accepts 1-128 bytes of printable UTF-8.
func validOwner(s string) error {
	if s == "" || len(s) > MaxOwnerBytes {
		return invalidf("owner id must be 1-%d bytes", MaxOwnerBytes)
	}
	return printable("owner id", s)
}

func printable(what, s string) error {
	if !utf8.ValidString(s) {
		return invalidf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalidf("%s contains a control character", what)
		}
	}
	return nil
}
