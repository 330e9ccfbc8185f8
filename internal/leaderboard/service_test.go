package leaderboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A weekly board in Paris time crosses resets on an injected clock: the
// finished period is archived under its id and stays readable, the new one
// starts empty, empty weeks are skipped, and the start of summer time moves
// the reset's UTC instant.
func TestLeaderboardCronResetArchivesPeriods(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2025, 3, 5, 9, 0, 0, 0, time.UTC)} // Wednesday 10:00 in Paris
	reg := prometheus.NewRegistry()
	svc, err := New(ctx, Options{Backend: embeddedFactory(t), Now: clock.Now, Registerer: reg,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	mustBoard(t, svc, Board{ID: "weekly", Reset: "0 0 * * 1", TimeZone: "Europe/Paris"})
	submit(t, svc, "weekly", "a", 10, 0, 0)
	submit(t, svc, "weekly", "b", 20, 0, 0)
	if ended := svc.CheckResets(); len(ended) != 0 {
		t.Fatalf("ended before any reset: %v", ended)
	}
	first, _ := svc.CurrentPeriod(ctx, "weekly")
	// Monday 00:00 in Paris is Sunday 23:00 UTC in winter.
	if first.ID != "20250305T090000Z" || !first.End.Equal(time.Date(2025, 3, 9, 23, 0, 0, 0, time.UTC)) {
		t.Fatalf("first period %+v", first)
	}

	clock.Set(time.Date(2025, 3, 9, 22, 59, 59, 0, time.UTC))
	if ended := svc.CheckResets(); len(ended) != 0 {
		t.Fatalf("ended a second early: %v", ended)
	}
	if n, _ := svc.Count(ctx, "weekly", ""); n != 2 {
		t.Fatalf("records just before the reset: %d", n)
	}

	clock.Set(time.Date(2025, 3, 9, 23, 0, 0, 0, time.UTC))
	ended := svc.CheckResets()
	if len(ended) != 1 || ended[0].ID != first.ID || !ended[0].End.Equal(first.End) {
		t.Fatalf("ended = %+v, want the first period", ended)
	}
	if v := testutil.ToFloat64(svc.m.resets); v != 1 {
		t.Fatalf("rally_leaderboard_resets_total = %v", v)
	}
	page, err := svc.Top(ctx, "weekly", "", "", 10)
	if err != nil || len(page.Records) != 0 || page.Period != "20250309T230000Z" {
		t.Fatalf("new period: %+v %v", page, err)
	}
	if got := order(t, svc, "weekly", first.ID); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("archived period reads %v", got)
	}
	submit(t, svc, "weekly", "a", 5, 0, 0)

	// Three weeks on, across the change to summer time: the empty weeks
	// leave no periods; the current one began on Monday 31 March 00:00
	// CEST, which is 22:00 UTC the day before.
	clock.Set(time.Date(2025, 4, 2, 12, 0, 0, 0, time.UTC))
	ended = svc.CheckResets()
	if len(ended) != 1 || ended[0].ID != "20250309T230000Z" {
		t.Fatalf("ended = %+v", ended)
	}
	cur, _ := svc.CurrentPeriod(ctx, "weekly")
	if cur.ID != "20250330T220000Z" || !cur.End.Equal(time.Date(2025, 4, 6, 22, 0, 0, 0, time.UTC)) {
		t.Fatalf("period after the clock change: %+v", cur)
	}
	ps, err := svc.Periods(ctx, "weekly")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	if want := []string{"20250309T230000Z", first.ID}; !slices.Equal(ids, want) {
		t.Fatalf("periods %v, want %v (newest first, written ones only)", ids, want)
	}
	if r, _, err := svc.Rank(ctx, "weekly", "20250309T230000Z", "a"); err != nil || r.Score != 5 {
		t.Fatalf("second period's record: %+v %v", r, err)
	}

	// A new Service on the same store (another start, or another replica)
	// computes the same periods from the stored definition.
	again := newService(t, svc.be, clock.Now)
	if p, _ := again.CurrentPeriod(ctx, "weekly"); p != cur {
		t.Fatalf("after reload: %+v, want %+v", p, cur)
	}
}

func TestLeaderboardBoardDefinitions(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	svc := newService(t, embeddedFactory(t), clock.Now)
	b := mustBoard(t, svc, Board{ID: "kills", Operator: OpIncr, Reset: "@daily", Metadata: map[string]string{"title": "Kills"}})
	if b.Operator != OpIncr || !b.Created.Equal(clock.Now()) {
		t.Fatalf("created %+v", b)
	}
	clock.Set(clock.Now().Add(time.Hour))
	// The same definition again (every start with a boards file) changes
	// nothing, not even the creation time.
	if again := mustBoard(t, svc, Board{ID: "kills", Operator: OpIncr, Reset: "@daily", Metadata: map[string]string{"title": "Kills"}}); !again.Created.Equal(b.Created) || !again.Since.Equal(b.Since) {
		t.Fatalf("re-create moved times: %+v", again)
	}
	if _, err := svc.CreateBoard(ctx, Board{ID: "kills", Sort: Asc, Operator: OpIncr}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("sort change: %v", err)
	}
	// A new schedule ends the current period now.
	before, _ := svc.CurrentPeriod(ctx, "kills")
	changed := mustBoard(t, svc, Board{ID: "kills", Operator: OpIncr, Reset: "0 * * * *"})
	after, _ := svc.CurrentPeriod(ctx, "kills")
	if !changed.Since.Equal(clock.Now()) || after.ID == before.ID || !after.Start.Equal(clock.Now()) {
		t.Fatalf("schedule change: before %+v after %+v", before, after)
	}
	if got := svc.Boards(); len(got) != 1 || got[0].Metadata != nil || got[0].Reset != "0 * * * *" {
		t.Fatalf("Boards = %+v", got)
	}
	mustBoard(t, svc, Board{ID: "forever"})
	if _, p, err := svc.Board(ctx, "forever"); err != nil || p.ID != AllPeriod || !p.End.IsZero() {
		t.Fatalf("never-resetting board's period: %+v %v", p, err)
	}

	bad := []Board{
		{ID: ""}, {ID: "has space"}, {ID: strings.Repeat("x", 65)}, {ID: "a:b"},
		{ID: "x", Reset: "61 * * * *"}, {ID: "x", Reset: "0 0 30 2 *"}, {ID: "x", Reset: "@daily", TimeZone: "Mars/Olympus"},
		{ID: "x", TimeZone: "Europe/Paris"}, {ID: "x", Reset: "CRON_TZ=UTC 0 0 * * *"},
		{ID: "x", Operator: 9}, {ID: "x", Sort: 7}, {ID: "x", Metadata: map[string]string{"": "v"}},
	}
	for _, b := range bad {
		if _, err := svc.CreateBoard(ctx, b); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateBoard(%+v) = %v, want invalid", b, err)
		}
	}
}

// Every kind of bad input is refused with a clear error, never a panic,
// and counted.
func TestLeaderboardBadInputIsRefused(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	svc, err := New(ctx, Options{Backend: embeddedFactory(t), Registerer: reg, MaxMetadataBytes: 64,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	mustBoard(t, svc, Board{ID: "b"})
	mustBoard(t, svc, Board{ID: "other"})
	for i := range 3 {
		submit(t, svc, "b", fmt.Sprint("p", i), int64(i), 0, 0)
	}
	otherCursor := func() string {
		for i := range 3 {
			submit(t, svc, "other", fmt.Sprint("p", i), int64(i), 0, 0)
		}
		p, err := svc.Top(ctx, "other", "", "", 1)
		if err != nil || p.Next == "" {
			t.Fatal(p, err)
		}
		return p.Next
	}()

	cases := []struct {
		name string
		want error
		call func() error
	}{
		{"unknown board", ErrNotFound, func() error { _, err := svc.Submit(ctx, "nope", Write{Owner: "p", Score: 1}); return err }},
		{"unknown board read", ErrNotFound, func() error { _, err := svc.Top(ctx, "nope", "", "", 1); return err }},
		{"bad board id", ErrInvalid, func() error { _, _, err := svc.Around(ctx, "a/b", "", "p", 1); return err }},
		{"score above range", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Owner: "p", Score: MaxScore + 1}); return err }},
		{"subscore below range", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Owner: "p", Subscore: -MaxScore - 1}); return err }},
		{"huge metadata", ErrInvalid, func() error {
			_, err := svc.Submit(ctx, "b", Write{Owner: "p", Metadata: strings.Repeat("x", 65)})
			return err
		}},
		{"metadata not UTF-8", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Owner: "p", Metadata: "\xff"}); return err }},
		{"empty owner", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Score: 1}); return err }},
		{"long owner", ErrInvalid, func() error {
			_, err := svc.Submit(ctx, "b", Write{Owner: strings.Repeat("o", 129), Score: 1})
			return err
		}},
		{"control in owner", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Owner: "a\nb", Score: 1}); return err }},
		{"bad operator", ErrInvalid, func() error { _, err := svc.Submit(ctx, "b", Write{Owner: "p", Operator: 12}); return err }},
		{"limit too big", ErrInvalid, func() error { _, err := svc.Top(ctx, "b", "", "", 101); return err }},
		{"negative limit", ErrInvalid, func() error { _, _, err := svc.Around(ctx, "b", "", "p0", -1); return err }},
		{"garbage cursor", ErrInvalid, func() error { _, err := svc.Top(ctx, "b", "", "!!not base64!!", 5); return err }},
		{"short cursor", ErrInvalid, func() error { _, err := svc.Top(ctx, "b", "", "AQ", 5); return err }},
		{"another board's cursor", ErrInvalid, func() error { _, err := svc.Top(ctx, "b", "", otherCursor, 5); return err }},
		{"bad period", ErrInvalid, func() error { _, err := svc.Top(ctx, "b", "last-week", "", 5); return err }},
		{"too many owners", ErrInvalid, func() error {
			owners := make([]string, 101)
			for i := range owners {
				owners[i] = fmt.Sprint("p", i)
			}
			_, _, err := svc.Records(ctx, "b", "", owners)
			return err
		}},
		{"rank without record", ErrNotFound, func() error { _, _, err := svc.Rank(ctx, "b", "", "ghost"); return err }},
	}
	for _, c := range cases {
		if err := c.call(); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if n := testutil.ToFloat64(svc.m.rejections.WithLabelValues("bad_cursor")); n != 3 {
		t.Fatalf("bad_cursor rejections = %v", n)
	}
	if n := testutil.ToFloat64(svc.m.ops.WithLabelValues("submit", "invalid_argument")); n != 8 {
		t.Fatalf("invalid submits counted %v", n)
	}
	// A period that was never written reads as empty, without error.
	if p, err := svc.Top(ctx, "b", "20200101T000000Z", "", 5); err != nil || len(p.Records) != 0 {
		t.Fatalf("unwritten period: %+v %v", p, err)
	}
}

func TestLeaderboardBoardsFile(t *testing.T) {
	boards, err := ParseBoards([]byte(`
boards:
  - id: weekly_kills
    operator: incr
    reset: "0 0 * * 1"
    time_zone: Europe/Paris
    authoritative: true
    metadata: {title: Weekly kills}
  - id: lap_time
    sort: asc
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(boards) != 2 || boards[0].Operator != OpIncr || !boards[0].Authoritative || boards[0].Metadata["title"] != "Weekly kills" ||
		boards[1].Sort != Asc || boards[1].Operator != OpDefault {
		t.Fatalf("parsed %+v", boards)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"boards:\n  - id: a\n    sortt: asc\n", "sortt"},
		{"boards:\n  - id: a\n    sort: up\n", "board 1 (a)"},
		{"boards:\n  - id: a\n  - id: a\n", "repeated"},
		{"boards:\n  - id: a\n    reset: every day\n", "reset"},
		{"boards: [", "yaml"},
	} {
		_, err := ParseBoards([]byte(bad.yaml))
		if err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line naming %q", bad.yaml, err, bad.want)
		}
	}
	if _, err := LoadBoardsFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}
