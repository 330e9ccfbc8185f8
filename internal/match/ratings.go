package match

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// StoreRatings keeps ratings in the durable store.
type StoreRatings struct {
	St store.Store
}

// NewStoreRatings returns ratings over st.
func NewStoreRatings(st store.Store) *StoreRatings {
	return &StoreRatings{St: st}
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
