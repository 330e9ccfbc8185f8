// Package rating estimates player skill from match results with the
// Weng-Lin Bayesian approximation ("A Bayesian Approximation Method for
// Online Ranking", R. C. Weng and C.-J. Lin, JMLR 12, 2011).
//
// Each player's skill is a normal belief N(Mu, Sigma²). A team's strength
// is the sum of its players' beliefs, and after a match every team's belief
// is moved towards the observed ranking in closed form, without iterative
// message passing. Two likelihoods from the paper are offered: Plackett-Luce
// (Algorithm 4, the default) and Bradley-Terry with full pairing
// (Algorithm 1).
package rating

import (
	"errors"
	"fmt"
	"math"
)

// Defaults follow the paper's and TrueSkill's customary scale: a new
// player is 25 ± 25/3, so the conservative Ordinal of a newcomer is 0.
const (
	DefaultMu    = 25.0
	DefaultSigma = DefaultMu / 3
	DefaultBeta  = DefaultSigma / 2
	DefaultKappa = 0.0001
	DefaultTau   = DefaultMu / 300
)

// minSigma keeps every returned Sigma strictly positive, so a result can
// always be fed back into Rate even after a very long history.
const minSigma = 1e-6

// Rating is one player's skill belief: mean Mu and standard deviation Sigma.
type Rating struct {
	Mu, Sigma float64
}

// Default returns the rating of a player with no history.
func Default() Rating {
	return Rating{Mu: DefaultMu, Sigma: DefaultSigma}
}

// Ordinal is a conservative skill estimate, Mu - 3*Sigma: the player is
// better than this with about 99.7% confidence, so it suits leaderboards
// where newcomers should not top the table after one lucky win.
func (r Rating) Ordinal() float64 {
	return r.Mu - 3*r.Sigma
}

// Kind selects the likelihood a Model uses to explain a ranking.
type Kind int

const (
	// PlackettLuce (Algorithm 4) treats a ranking as teams picked one by
	// one from those still left; its cost is linear in pairs of ranks and
	// it is the default.
	PlackettLuce Kind = iota
	// BradleyTerryFull (Algorithm 1) treats a ranking as every pair of
	// teams playing an independent game.
	BradleyTerryFull
)

// String names the kind for logs and configuration.
func (k Kind) String() string {
	switch k {
	case PlackettLuce:
		return "plackett-luce"
	case BradleyTerryFull:
		return "bradley-terry-full"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Model holds the update's parameters.
type Model struct {
	// Beta is the spread of one match's performance around true skill;
	// larger values mean results are noisier and move ratings less.
	Beta float64
	// Kappa is the smallest factor a variance may be multiplied by in one
	// update, which keeps Sigma positive (the paper's κ).
	Kappa float64
	// Tau is added to every player's Sigma in quadrature (σ² += τ²)
	// before each update, so skill is allowed to drift over time and
	// Sigma never freezes. Zero disables the drift.
	Tau float64
	// Kind is the likelihood; the zero value is PlackettLuce.
	Kind Kind
}

// DefaultModel returns a Plackett-Luce model with beta = 25/6,
// kappa = 0.0001 and tau = 25/300.
func DefaultModel() Model {
	return Model{Beta: DefaultBeta, Kappa: DefaultKappa, Tau: DefaultTau, Kind: PlackettLuce}
}

// Errors returned by Rate; the returned error wraps one of these with
// the offending position.
var (
	ErrInvalidModel  = errors.New("rating: invalid model")
	ErrTooFewTeams   = errors.New("rating: need at least two teams")
	ErrEmptyTeam     = errors.New("rating: empty team")
	ErrRankCount     = errors.New("rating: ranks and teams differ in length")
	ErrInvalidRating = errors.New("rating: invalid rating")
)

// team is the per-team working state of one update.
type team struct {
	mu, sigma2   float64 // strength belief: sums over players
	rank         int
	omega, delta float64 // mean shift and variance reduction factor
	// Plackett-Luce only.
	e    float64 // exp(mu/c), scaled to avoid overflow
	sumC float64 // Σ e over teams ranked at or below this one
	tied float64 // number of teams sharing this rank (A_q)
}

// Rate returns updated ratings after a match. teams[i] lists team i's
// players; ranks[i] is its place, lower is better (0 = first), and equal
// ranks are ties. The inputs are not modified; the result has the same
// shape as teams. Every returned Sigma is at most the input Sigma widened
// by Tau, and at least a tiny positive floor (inputs below that floor are
// treated as the floor).
func (m Model) Rate(teams [][]Rating, ranks []int) ([][]Rating, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	players, err := validateMatch(teams, ranks)
	if err != nil {
		return nil, err
	}

	// One backing array for every player and one for the teams keeps the
	// update at a fixed, small number of allocations.
	flat := make([]Rating, players)
	out := make([][]Rating, len(teams))
	ts := make([]team, len(teams))
	tau2 := m.Tau * m.Tau
	n := 0
	for i, tm := range teams {
		t := &ts[i]
		t.rank = ranks[i]
		out[i] = flat[n : n+len(tm) : n+len(tm)]
		n += len(tm)
		for j, p := range tm {
			// Flooring input sigma as outputs are floored keeps a team's
			// variance positive even if sigma² would underflow.
			sg := math.Max(p.Sigma, minSigma)
			v := sg*sg + tau2
			// Sigma holds the variance until the final step, to avoid a
			// sqrt and re-square per player.
			out[i][j] = Rating{Mu: p.Mu, Sigma: v}
			t.mu += p.Mu
			t.sigma2 += v
		}
	}

	switch m.Kind {
	case BradleyTerryFull:
		m.bradleyTerryFull(ts)
	default:
		m.plackettLuce(ts)
	}

	// A team's update is shared in proportion to each player's variance:
	// the players we know least about absorb most of the surprise.
	for i := range out {
		t := &ts[i]
		for j := range out[i] {
			p := &out[i][j]
			v := p.Sigma
			share := v / t.sigma2
			p.Mu += share * t.omega
			v *= math.Max(1-share*t.delta, m.Kappa)
			p.Sigma = math.Max(math.Sqrt(v), minSigma)
		}
	}
	return out, nil
}

// plackettLuce fills omega and delta per Algorithm 4 of the paper. All
// teams share one normaliser c² = Σ (σ_i² + β²).
func (m Model) plackettLuce(ts []team) {
	beta2 := m.Beta * m.Beta
	var c2 float64
	maxMu := math.Inf(-1)
	for i := range ts {
		c2 += ts[i].sigma2 + beta2
		maxMu = math.Max(maxMu, ts[i].mu)
	}
	c := math.Sqrt(c2)
	// Only ratios of exp(mu/c) matter, so shifting by the largest mu
	// keeps them finite for any rating scale.
	for i := range ts {
		ts[i].e = math.Exp((ts[i].mu - maxMu) / c)
	}
	for q := range ts {
		for s := range ts {
			if ts[s].rank >= ts[q].rank {
				ts[q].sumC += ts[s].e
			}
			if ts[s].rank == ts[q].rank {
				ts[q].tied++
			}
		}
	}
	for i := range ts {
		ti := &ts[i]
		var omega, delta float64
		// Team i appears in the choice set C_q of every q ranked at or
		// above it; ties divide each term by the size of the tie.
		for q := range ts {
			tq := &ts[q]
			if tq.rank > ti.rank {
				continue
			}
			p := ti.e / tq.sumC
			if q == i {
				omega += (1 - p) / tq.tied
			} else {
				omega -= p / tq.tied
			}
			delta += p * (1 - p) / tq.tied
		}
		gamma := math.Sqrt(ti.sigma2) / c
		ti.omega = ti.sigma2 / c * omega
		ti.delta = gamma * ti.sigma2 / c2 * delta
	}
}

// bradleyTerryFull fills omega and delta per Algorithm 1 of the paper:
// every pair of teams is a separate game with its own normaliser
// c_iq² = σ_i² + σ_q² + 2β².
func (m Model) bradleyTerryFull(ts []team) {
	twoBeta2 := 2 * m.Beta * m.Beta
	for i := range ts {
		ti := &ts[i]
		for q := range ts {
			if q == i {
				continue
			}
			tq := &ts[q]
			c2 := ti.sigma2 + tq.sigma2 + twoBeta2
			c := math.Sqrt(c2)
			p := logistic((ti.mu - tq.mu) / c)
			var s float64
			switch {
			case ti.rank < tq.rank:
				s = 1
			case ti.rank == tq.rank:
				s = 0.5
			}
			gamma := math.Sqrt(ti.sigma2) / c
			ti.omega += ti.sigma2 / c * (s - p)
			ti.delta += gamma * ti.sigma2 / c2 * p * (1 - p)
		}
	}
}

// logistic is 1/(1+e^-x), the Bradley-Terry win probability for a scaled
// strength difference x.
func logistic(x float64) float64 {
	return 1 / (1 + math.Exp(-x))
}

func (m Model) validate() error {
	switch {
	case !(m.Beta > 0) || math.IsInf(m.Beta, 0):
		return fmt.Errorf("%w: beta %v must be positive and finite", ErrInvalidModel, m.Beta)
	case !(m.Kappa > 0 && m.Kappa <= 1):
		// Above 1 the clamp would let a match increase Sigma.
		return fmt.Errorf("%w: kappa %v must be in (0, 1]", ErrInvalidModel, m.Kappa)
	case !(m.Tau >= 0) || math.IsInf(m.Tau, 0):
		return fmt.Errorf("%w: tau %v must be non-negative and finite", ErrInvalidModel, m.Tau)
	case m.Kind != PlackettLuce && m.Kind != BradleyTerryFull:
		return fmt.Errorf("%w: unknown kind %v", ErrInvalidModel, m.Kind)
	}
	return nil
}

// validateMatch checks the match's shape and values and returns the total
// number of players.
func validateMatch(teams [][]Rating, ranks []int) (int, error) {
	if len(teams) < 2 {
		return 0, fmt.Errorf("%w: got %d", ErrTooFewTeams, len(teams))
	}
	if len(ranks) != len(teams) {
		return 0, fmt.Errorf("%w: %d ranks for %d teams", ErrRankCount, len(ranks), len(teams))
	}
	n := 0
	for i, tm := range teams {
		if len(tm) == 0 {
			return 0, fmt.Errorf("%w: team %d", ErrEmptyTeam, i)
		}
		for j, p := range tm {
			if math.IsNaN(p.Mu) || math.IsInf(p.Mu, 0) {
				return 0, fmt.Errorf("%w: team %d player %d: mu %v is not finite", ErrInvalidRating, i, j, p.Mu)
			}
			// Squaring must stay finite too, or team variances overflow.
			if !(p.Sigma > 0) || math.IsInf(p.Sigma*p.Sigma, 0) {
				return 0, fmt.Errorf("%w: team %d player %d: sigma %v must be positive and finite", ErrInvalidRating, i, j, p.Sigma)
			}
		}
		n += len(tm)
	}
	return n, nil
}
