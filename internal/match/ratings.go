package match

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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

const ratingsBucket = "match_ratings"

// StoreRatings keeps ratings in the durable store, and the teams of recent
// matches (so a result can be checked against who played) in memory for
// MatchRecordTTL: a match lives in a room of this node, which a restart
// ends anyway, and unreported matches must not pile up on disk.
type StoreRatings struct {
	St store.Store

	mu      sync.Mutex
	matches map[string]matchRecord
	swept   time.Time
	now     func() time.Time
}

type matchRecord struct {
	teams [][]string
	at    time.Time
}

// MatchRecordTTL is how long a match's result can be reported.
const MatchRecordTTL = 6 * time.Hour

// NewStoreRatings returns ratings over st.
func NewStoreRatings(st store.Store) *StoreRatings {
	return &StoreRatings{St: st, matches: map[string]matchRecord{}, now: time.Now}
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
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.matches[matchID] = matchRecord{teams: teams, at: now}
	// Sweeping at most once a minute keeps RecordMatch O(1) on average.
	if now.Sub(s.swept) > time.Minute {
		for id, r := range s.matches {
			if now.Sub(r.at) > MatchRecordTTL {
				delete(s.matches, id)
			}
		}
		s.swept = now
	}
	return nil
}

// MatchTeams returns who played a match, or ErrMatchNotFound.
func (s *StoreRatings) MatchTeams(_ context.Context, matchID string) ([][]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.matches[matchID]
	if !ok || s.now().Sub(r.at) > MatchRecordTTL {
		return nil, ErrMatchNotFound
	}
	return r.teams, nil
}

// ForgetMatch removes a match once its result is in: a result counts once.
func (s *StoreRatings) ForgetMatch(_ context.Context, matchID string) error {
	s.mu.Lock()
	delete(s.matches, matchID)
	s.mu.Unlock()
	return nil
}

// ErrMatchNotFound is returned for a result of an unknown (or already
// reported) match.
var ErrMatchNotFound = errors.New("match: no such match (or its result is already in)")
