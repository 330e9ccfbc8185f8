package rating

import "math"

// strength sums a team's means and variances, including the tau drift
// that Rate would add, so predictions describe the match as Rate sees it.
func (m Model) strength(players []Rating) (mu, sigma2 float64) {
	tau2 := m.Tau * m.Tau
	for _, p := range players {
		mu += p.Mu
		sigma2 += p.Sigma*p.Sigma + tau2
	}
	return mu, sigma2
}

// WinProbability returns the probability that team a beats team b under
// the model's Bradley-Terry pairwise likelihood (with two teams
// Plackett-Luce reduces to the same formula):
//
//	P = 1 / (1 + exp(-(μa - μb) / c)),  c² = σa² + σb² + 2β²
//
// where μ and σ² are sums over each team's players. WinProbability(a, b)
// + WinProbability(b, a) = 1. The result is NaN if any value is NaN.
func (m Model) WinProbability(a, b []Rating) float64 {
	muA, s2A := m.strength(a)
	muB, s2B := m.strength(b)
	c := math.Sqrt(s2A + s2B + 2*m.Beta*m.Beta)
	if c == 0 {
		// No uncertainty at all: the stronger team always wins.
		switch {
		case muA > muB:
			return 1
		case muA < muB:
			return 0
		default:
			return 0.5
		}
	}
	return logistic((muA - muB) / c)
}

// MatchQuality scores how even a match is, in [0, 1]; higher is better.
//
// For each pair of teams i, j it uses the TrueSkill-style relative draw
// probability
//
//	q_ij = sqrt(2β² / c_ij²) · exp(-(μi - μj)² / (2 c_ij²)),
//	c_ij² = σi² + σj² + 2β²
//
// which is 1 only for identical, perfectly known teams; it falls as the
// gap in strength grows relative to the pair's combined uncertainty, and
// also as that uncertainty grows, since an even-looking match between
// unknown players may not be even. The match's quality is the geometric
// mean of q_ij over all pairs, so for two teams it is exactly q_01 and in
// a free-for-all one badly mismatched entrant drags the score down more
// than an arithmetic mean would. Two fresh players with tau = 0 score
// sqrt(1/5) ≈ 0.447.
//
// Fewer than two teams score 0; the result is NaN if any value is NaN.
func (m Model) MatchQuality(teams [][]Rating) float64 {
	if len(teams) < 2 {
		return 0
	}
	twoBeta2 := 2 * m.Beta * m.Beta
	var sumLog float64
	pairs := 0
	for i := range teams {
		muI, s2I := m.strength(teams[i])
		for j := i + 1; j < len(teams); j++ {
			muJ, s2J := m.strength(teams[j])
			c2 := s2I + s2J + twoBeta2
			d := muI - muJ
			// Logs keep the product of many small factors from
			// underflowing in large free-for-alls.
			sumLog += 0.5*math.Log(twoBeta2/c2) - d*d/(2*c2)
			pairs++
		}
	}
	q := math.Exp(sumLog / float64(pairs))
	return math.Min(math.Max(q, 0), 1)
}
