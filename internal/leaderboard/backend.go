package leaderboard

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// Backend keeps boards and their records. The Service validates every
// argument and resolves periods and operators before calling it: a write's
// Operator is never OpDefault here, and owners are valid.
type Backend interface {
	// SaveBoard stores a board's definition (creating or replacing it).
	SaveBoard(ctx context.Context, b Board) error
	// Boards returns every stored definition.
	Boards(ctx context.Context) ([]Board, error)
	// Board returns one stored definition, or ErrNotFound.
	Board(ctx context.Context, id string) (Board, error)
	// Submit applies writes in order to period p of board b and returns
	// one Result per write, each record with its rank just after its
	// write. It returns once the writes are durable.
	Submit(ctx context.Context, b *Board, p Period, ws []Write, now time.Time) ([]Result, error)
	// Top returns up to limit records in rank order, from the first or
	// from the first after key after.
	Top(ctx context.Context, b *Board, period string, after *Key, limit int) ([]Record, error)
	// Around returns up to limit records around owner's (see aroundStart);
	// ErrNotFound when owner has no record.
	Around(ctx context.Context, b *Board, period, owner string, limit int) ([]Record, error)
	// Records returns the records of the owners that have one, in the
	// order asked.
	Records(ctx context.Context, b *Board, period string, owners []string) ([]Record, error)
	// Delete removes owner's record and reports whether there was one.
	Delete(ctx context.Context, b *Board, period, owner string) (bool, error)
	// Count returns the number of records in a period.
	Count(ctx context.Context, b *Board, period string) (int64, error)
	// Periods returns the periods that were written to, in no set order.
	Periods(ctx context.Context, b *Board) ([]Period, error)
	// Close releases the backend; pending writes finish first.
	Close() error
}

// boardJSON is how both backends store a definition.
type boardJSON struct {
	ID            string            `json:"id"`
	Sort          string            `json:"sort"`
	Operator      string            `json:"operator"`
	Reset         string            `json:"reset,omitempty"`
	TimeZone      string            `json:"time_zone,omitempty"`
	Authoritative bool              `json:"authoritative,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	CreatedMS     int64             `json:"created_ms"`
	SinceMS       int64             `json:"since_ms"`
}

func marshalBoard(b Board) ([]byte, error) {
	return json.Marshal(boardJSON{
		ID: b.ID, Sort: b.Sort.String(), Operator: b.Operator.String(), Reset: b.Reset, TimeZone: b.TimeZone,
		Authoritative: b.Authoritative, Metadata: b.Metadata,
		CreatedMS: b.Created.UnixMilli(), SinceMS: b.Since.UnixMilli(),
	})
}

func unmarshalBoard(data []byte) (Board, error) {
	var j boardJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Board{}, fmt.Errorf("leaderboard: stored board: %w", err)
	}
	sort, err := ParseSortOrder(j.Sort)
	if err != nil {
		return Board{}, fmt.Errorf("leaderboard: stored board %s: %w", j.ID, err)
	}
	op, err := ParseOperator(j.Operator)
	if err != nil {
		return Board{}, fmt.Errorf("leaderboard: stored board %s: %w", j.ID, err)
	}
	return Board{
		ID: j.ID, Sort: sort, Operator: op, Reset: j.Reset, TimeZone: j.TimeZone, Authoritative: j.Authoritative,
		Metadata: maps.Clone(j.Metadata), Created: time.UnixMilli(j.CreatedMS), Since: time.UnixMilli(j.SinceMS),
	}, nil
}

// periodValue is how both backends store a period's bounds.
func periodValue(p Period) string {
	var end int64
	if !p.End.IsZero() {
		end = p.End.UnixMilli()
	}
	return fmt.Sprintf("%d,%d", p.Start.UnixMilli(), end)
}

func parsePeriodValue(id, v string) (Period, error) {
	var start, end int64
	if _, err := fmt.Sscanf(v, "%d,%d", &start, &end); err != nil {
		return Period{}, fmt.Errorf("leaderboard: stored period %s: %q", id, v)
	}
	p := Period{ID: id, Start: time.UnixMilli(start)}
	if end != 0 {
		p.End = time.UnixMilli(end)
	}
	return p, nil
}
