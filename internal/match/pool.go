package match

import (
	"context"
	"errors"
	"time"
)

// GeoPoint is a position on Earth in degrees.
type GeoPoint struct {
	Lat, Lon float64
}

// Player is one member of a ticket's party.
type Player struct {
	UserID string
	Mu     float64
	Sigma  float64
}

// Ticket is one party's request for a match.
type Ticket struct {
	ID      string
	Queue   string
	Players []Player
	// Latency to each region, milliseconds.
	Regions map[string]uint32
	Geo     *GeoPoint
	Strings map[string]string
	Numbers map[string]float64
	Created time.Time
	// Rating is the party's matchmaking rating (its mean mu); Pool keeps
	// tickets indexed by it.
	Rating float64
	// PoolKey groups tickets that may be matched together: the queue and
	// the values of the queue's "same" attributes.
	PoolKey string
}

// State is where a ticket is in its life.
type State int

const (
	StateWaiting State = iota + 1
	StateClaimed
	StateGone
)

// ErrTicketNotFound is returned for an unknown (or finished) ticket.
var ErrTicketNotFound = errors.New("match: ticket not found")

// Pool stores waiting tickets for the engine: in memory for one process,
// or in Redis so that several Rally replicas share one pool. A ticket moves
// from waiting to claimed at most once per claim, atomically, so two
// engines never put one ticket in two matches.
type Pool interface {
	// Add stores a waiting ticket.
	Add(ctx context.Context, t *Ticket) error
	// Remove deletes a waiting ticket (cancel, expiry) and reports whether
	// it was still waiting.
	Remove(ctx context.Context, id string) (bool, error)
	// Keys lists the pool keys that have waiting tickets.
	Keys(ctx context.Context) ([]string, error)
	// Oldest returns up to limit waiting tickets of a pool, oldest first:
	// the anchors a matching pass starts from.
	Oldest(ctx context.Context, poolKey string, limit int) ([]*Ticket, error)
	// Near returns up to limit waiting tickets of a pool whose rating is
	// within [rating-window, rating+window], nearest first.
	Near(ctx context.Context, poolKey string, rating, window float64, limit int) ([]*Ticket, error)
	// Claim atomically moves every listed ticket from waiting to claimed
	// for matchID, or none of them if any is not waiting; it reports which.
	Claim(ctx context.Context, matchID string, ids []string) (bool, error)
	// Requeue returns claimed tickets to waiting, keeping their original
	// creation time so they stay at the front of the line.
	Requeue(ctx context.Context, ids []string) error
	// Finish forgets claimed tickets once their match is assigned.
	Finish(ctx context.Context, ids []string) error
	// Waiting returns the ticket if it is still waiting.
	Waiting(ctx context.Context, id string) (*Ticket, bool, error)
}
