package match

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/rallyhq/rally/internal/rating"
	"github.com/rallyhq/rally/internal/store"
)

// Rally rates players on an Elo-like scale: OpenSkill's model scaled by 60,
// so a new player is 1500 ± 500 and queue windows read as familiar rating
// points. The model is scale-invariant when mu, sigma, beta and tau scale
// together.
const ratingScale = 60

// NewPlayerRating is the rating of a player with no results yet.
func NewPlayerRating() rating.Rating {
	d := rating.Default()
	return rating.Rating{Mu: d.Mu * ratingScale, Sigma: d.Sigma * ratingScale}
}

// RatingModel is the model results are rated with, on Rally's scale.
func RatingModel() rating.Model {
	m := rating.DefaultModel()
	m.Beta *= ratingScale
	m.Tau *= ratingScale
	return m
}

const (
	ratingsBucket = "match_ratings"
	matchesBucket = "match_results"
)

// StoreRatings keeps ratings and the teams of allocated matches (so a
// result can be checked against who played) in the durable store. Match
// records are written in batches by a background goroutine (Start), since
// a matching pass makes hundreds of matches and one fsync each would stall
// it; until written they are served from memory.
type StoreRatings struct {
	St store.Store

	mu      sync.Mutex
	pending map[string][][]string
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// NewStoreRatings returns ratings over st; call Start before use.
func NewStoreRatings(st store.Store) *StoreRatings {
	return &StoreRatings{St: st, pending: map[string][][]string{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start runs the background writer of match records.
func (s *StoreRatings) Start() {
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.kick:
				s.flush()
			case <-s.stop:
				s.flush()
				return
			}
		}
	}()
}

// Close writes what is pending and stops the writer.
func (s *StoreRatings) Close(context.Context) error {
	close(s.stop)
	<-s.done
	return nil
}

func (s *StoreRatings) flush() {
	s.mu.Lock()
	batch := make(map[string][]byte, len(s.pending))
	for id, teams := range s.pending {
		batch[id], _ = json.Marshal(teams)
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := s.St.PutMany(context.Background(), matchesBucket, batch); err != nil {
		return // kept pending; the next kick retries
	}
	s.mu.Lock()
	for id := range batch {
		delete(s.pending, id)
	}
	s.mu.Unlock()
}

// Get returns each user's rating, NewPlayerRating for unknown users.
func (s *StoreRatings) Get(ctx context.Context, users []string) (map[string]rating.Rating, error) {
	out := make(map[string]rating.Rating, len(users))
	for _, u := range users {
		b, err := s.St.Get(ctx, ratingsBucket, u)
		switch {
		case errors.Is(err, store.ErrNotFound):
			out[u] = NewPlayerRating()
		case err != nil:
			return nil, err
		default:
			var r rating.Rating
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("match: rating of %s: %w", u, err)
			}
			out[u] = r
		}
	}
	return out, nil
}

// Put stores ratings.
func (s *StoreRatings) Put(ctx context.Context, ratings map[string]rating.Rating) error {
	batch := make(map[string][]byte, len(ratings))
	for u, r := range ratings {
		batch[u], _ = json.Marshal(r)
	}
	return s.St.PutMany(ctx, ratingsBucket, batch)
}

// RecordMatch remembers who played a match.
func (s *StoreRatings) RecordMatch(_ context.Context, matchID string, teams [][]string) error {
	s.mu.Lock()
	s.pending[matchID] = teams
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// MatchTeams returns who played a match, or ErrMatchNotFound.
func (s *StoreRatings) MatchTeams(ctx context.Context, matchID string) ([][]string, error) {
	s.mu.Lock()
	teams, ok := s.pending[matchID]
	s.mu.Unlock()
	if ok {
		return teams, nil
	}
	b, err := s.St.Get(ctx, matchesBucket, matchID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrMatchNotFound
	}
	if err != nil {
		return nil, err
	}
	return teams, json.Unmarshal(b, &teams)
}

// ForgetMatch removes a match once its result is in: a result counts once.
func (s *StoreRatings) ForgetMatch(ctx context.Context, matchID string) error {
	s.mu.Lock()
	delete(s.pending, matchID)
	s.mu.Unlock()
	return s.St.Delete(ctx, matchesBucket, matchID)
}

// ErrMatchNotFound is returned for a result of an unknown (or already
// reported) match.
var ErrMatchNotFound = errors.New("match: no such match (or its result is already in)")

// RoomCreator makes a room that admits only a match's players.
type RoomCreator interface {
	CreateReserved(ctx context.Context, handler string, labels map[string]string, users []string) (roomID string, reservations map[string]string, err error)
}

// RoomAllocator is the built-in Allocator: every match gets a new room on
// this Rally node, running the queue's handler, with a seat reserved for
// each player.
type RoomAllocator struct {
	Rooms   RoomCreator
	Ratings *StoreRatings
	// Connection is this node's address for players (http.advertise).
	Connection string
}

// Allocate implements Allocator.
func (a RoomAllocator) Allocate(ctx context.Context, m *Match) (*Assignment, error) {
	var users []string
	for _, team := range m.Teams {
		users = append(users, team...)
	}
	labels := map[string]string{"match_id": m.ID, "queue": m.Queue.Name}
	if m.Region != "" {
		labels["region"] = m.Region
	}
	roomID, tokens, err := a.Rooms.CreateReserved(ctx, m.Queue.Handler, labels, users)
	if err != nil {
		return nil, err
	}
	if a.Ratings != nil {
		if err := a.Ratings.RecordMatch(ctx, m.ID, m.Teams); err != nil {
			return nil, err
		}
	}
	return &Assignment{MatchID: m.ID, RoomID: roomID, Connection: a.Connection, Reservations: tokens, Teams: m.Teams, Region: m.Region}, nil
}
