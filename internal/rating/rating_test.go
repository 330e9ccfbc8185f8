package rating

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

const tol = 1e-9

func near(a, b, eps float64) bool {
	return math.Abs(a-b) <= eps
}

var kinds = []Kind{PlackettLuce, BradleyTerryFull}

func modelOf(k Kind) Model {
	m := DefaultModel()
	m.Kind = k
	return m
}

func mustRate(t *testing.T, m Model, teams [][]Rating, ranks []int) [][]Rating {
	t.Helper()
	out, err := m.Rate(teams, ranks)
	if err != nil {
		t.Fatalf("Rate(%v, %v): %v", teams, ranks, err)
	}
	return out
}

func TestDefaults(t *testing.T) {
	r := Default()
	if r.Mu != 25 || !near(r.Sigma, 25.0/3, tol) {
		t.Fatalf("Default() = %+v", r)
	}
	if !near(r.Ordinal(), 0, tol) {
		t.Fatalf("Default().Ordinal() = %v, want 0", r.Ordinal())
	}
	if got := (Rating{Mu: 30, Sigma: 2}).Ordinal(); got != 24 {
		t.Fatalf("Ordinal = %v, want 24", got)
	}
	m := DefaultModel()
	if !near(m.Beta, 25.0/6, tol) || m.Kappa != 0.0001 || !near(m.Tau, 25.0/300, tol) || m.Kind != PlackettLuce {
		t.Fatalf("DefaultModel() = %+v", m)
	}
}

// TestRate1v1Worked checks two fresh players, worked by hand from
// Algorithm 4 (Plackett-Luce) of the paper with the default model.
//
// Tau step: σ² = (25/3)² + (25/300)² = 69.444444 + 0.006944 = 69.451389.
// β² = (25/6)² = 17.361111.
// c² = Σ(σ_i² + β²) = 2·69.451389 + 2·17.361111 = 173.625, c = 13.176684.
// Equal means, so exp(μ/c) is the same for both and every p̂ = 1/2.
//
// Winner (rank 0): only q = winner counts, C_q = {both}, p̂ = 1/2.
//
//	Ω = σ²/c · (1 − 1/2) = 69.451389 / 13.176684 / 2 = 2.635389
//	γ = σ/c = 8.333750 / 13.176684 = 0.632462
//	Δ = γ · σ²/c² · p̂(1 − p̂) = 0.632462 · 0.400008 · 0.25 = 0.063247
//
// Loser (rank 1): q = winner gives −p̂ = −1/2 and p̂(1−p̂) = 1/4;
// q = loser has C_q = {loser}, p̂ = 1, contributing 0 to both sums.
//
//	Ω = −2.635389, Δ = 0.063247
//
// One player per team, so the whole update is theirs:
//
//	μ' = 25 ± 2.635389 → 27.635389 and 22.364611
//	σ'² = 69.451389 · (1 − 0.063247) = 65.058766, σ' = 8.065901
//
// With tau = 0 the same steps give the widely quoted 27.635231,
// 22.364769 and σ' = 8.065506 (σ² = 69.444444, c² = 173.611111,
// Ω = 0.2c = 2.635231, Δ = sqrt(0.4) · 0.4 · 0.25 = 0.063246).
func TestRate1v1Worked(t *testing.T) {
	cases := []struct {
		name                 string
		tau                  float64
		winMu, loseMu, sigma float64
	}{
		{"default tau", DefaultTau, 27.635389493140497, 22.364610506859503, 8.065901413543681},
		{"no tau", 0, 27.63523138347365, 22.36476861652635, 8.065506316323548},
	}
	for _, k := range kinds {
		for _, tc := range cases {
			m := modelOf(k)
			m.Tau = tc.tau
			out := mustRate(t, m, [][]Rating{{Default()}, {Default()}}, []int{0, 1})
			w, l := out[0][0], out[1][0]
			if !near(w.Mu, tc.winMu, tol) || !near(l.Mu, tc.loseMu, tol) ||
				!near(w.Sigma, tc.sigma, tol) || !near(l.Sigma, tc.sigma, tol) {
				t.Errorf("%v %s: winner %+v loser %+v, want mu %v/%v sigma %v",
					k, tc.name, w, l, tc.winMu, tc.loseMu, tc.sigma)
			}
			// Equal gain and loss, both less uncertain.
			if !near(w.Mu-25, 25-l.Mu, tol) || w.Sigma >= DefaultSigma {
				t.Errorf("%v %s: asymmetric or sigma did not shrink: %+v %+v", k, tc.name, w, l)
			}
		}
	}
}

// With two teams Plackett-Luce and Bradley-Terry are the same likelihood.
func TestKindsAgreeOnTwoTeams(t *testing.T) {
	teams := [][]Rating{{{Mu: 31, Sigma: 4}, {Mu: 18, Sigma: 7}}, {{Mu: 24, Sigma: 2}}}
	for _, ranks := range [][]int{{0, 1}, {1, 0}, {0, 0}} {
		pl := mustRate(t, modelOf(PlackettLuce), teams, ranks)
		bt := mustRate(t, modelOf(BradleyTerryFull), teams, ranks)
		for i := range pl {
			for j := range pl[i] {
				if !near(pl[i][j].Mu, bt[i][j].Mu, tol) || !near(pl[i][j].Sigma, bt[i][j].Sigma, tol) {
					t.Errorf("ranks %v team %d player %d: PL %+v BT %+v", ranks, i, j, pl[i][j], bt[i][j])
				}
			}
		}
	}
}

func TestSymmetryUnderReordering(t *testing.T) {
	teams := [][]Rating{
		{{Mu: 27, Sigma: 5}, {Mu: 22, Sigma: 8}},
		{{Mu: 30, Sigma: 3}},
		{{Mu: 19, Sigma: 6}, {Mu: 25, Sigma: 4}},
		{{Mu: 25, Sigma: 25.0 / 3}},
	}
	ranks := []int{2, 0, 1, 1}
	perm := []int{3, 1, 0, 2}
	for _, k := range kinds {
		m := modelOf(k)
		base := mustRate(t, m, teams, ranks)
		pTeams := make([][]Rating, len(perm))
		pRanks := make([]int, len(perm))
		for i, from := range perm {
			pTeams[i] = teams[from]
			pRanks[i] = ranks[from]
		}
		got := mustRate(t, m, pTeams, pRanks)
		for i, from := range perm {
			for j := range got[i] {
				if !near(got[i][j].Mu, base[from][j].Mu, tol) || !near(got[i][j].Sigma, base[from][j].Sigma, tol) {
					t.Errorf("%v: team %d player %d: %+v after reorder, %+v before", k, from, j, got[i][j], base[from][j])
				}
			}
		}
	}
}

func TestTieBetweenEqualPlayers(t *testing.T) {
	for _, k := range kinds {
		for _, r := range []Rating{Default(), {Mu: 40, Sigma: 2}} {
			out := mustRate(t, modelOf(k), [][]Rating{{r}, {r}}, []int{0, 0})
			for i := range out {
				if !near(out[i][0].Mu, r.Mu, tol) {
					t.Errorf("%v: tie moved mu %v -> %v", k, r.Mu, out[i][0].Mu)
				}
				if out[i][0].Sigma >= r.Sigma {
					t.Errorf("%v: tie did not shrink sigma %v -> %v", k, r.Sigma, out[i][0].Sigma)
				}
			}
		}
	}
}

func TestUpsetMovesMoreThanExpectedWin(t *testing.T) {
	strong := Rating{Mu: 30, Sigma: 5}
	weak := Rating{Mu: 20, Sigma: 5}
	for _, k := range kinds {
		m := modelOf(k)
		expected := mustRate(t, m, [][]Rating{{strong}, {weak}}, []int{0, 1})
		upset := mustRate(t, m, [][]Rating{{strong}, {weak}}, []int{1, 0})
		expGain := expected[0][0].Mu - strong.Mu
		upsetGain := upset[1][0].Mu - weak.Mu
		if !(expGain > 0 && upsetGain > expGain) {
			t.Errorf("%v: expected win gained %v, upset gained %v", k, expGain, upsetGain)
		}
		expLoss := weak.Mu - expected[1][0].Mu
		upsetLoss := strong.Mu - upset[0][0].Mu
		if !(expLoss > 0 && upsetLoss > expLoss) {
			t.Errorf("%v: expected loss %v, upset loss %v", k, expLoss, upsetLoss)
		}
	}
}

// With equal team variances every pairwise term is antisymmetric, so
// whatever one side gains the other loses.
func TestMuSumConserved(t *testing.T) {
	pairs := [][2]float64{{25, 25}, {30, 20}, {10, 45}, {-5, 3}}
	for _, k := range kinds {
		m := modelOf(k)
		for _, p := range pairs {
			for _, ranks := range [][]int{{0, 1}, {1, 0}, {0, 0}} {
				a, b := Rating{Mu: p[0], Sigma: 6}, Rating{Mu: p[1], Sigma: 6}
				out := mustRate(t, m, [][]Rating{{a}, {b}}, ranks)
				if sum := out[0][0].Mu + out[1][0].Mu; !near(sum, a.Mu+b.Mu, tol) {
					t.Errorf("%v %v ranks %v: mu sum %v, want %v", k, p, ranks, sum, a.Mu+b.Mu)
				}
			}
		}
		// The same holds for a free-for-all of equal-sigma players.
		ffa := [][]Rating{{{Mu: 20, Sigma: 4}}, {{Mu: 28, Sigma: 4}}, {{Mu: 25, Sigma: 4}}, {{Mu: 33, Sigma: 4}}}
		out := mustRate(t, m, ffa, []int{1, 3, 0, 1})
		var before, after float64
		for i := range ffa {
			before += ffa[i][0].Mu
			after += out[i][0].Mu
		}
		if !near(before, after, tol) {
			t.Errorf("%v: free-for-all mu sum %v -> %v", k, before, after)
		}
	}
}

func TestFreeForAllOrdersByRank(t *testing.T) {
	ranks := []int{2, 0, 3, 1}
	for _, k := range kinds {
		teams := make([][]Rating, len(ranks))
		for i := range teams {
			teams[i] = []Rating{Default()}
		}
		out := mustRate(t, modelOf(k), teams, ranks)
		byRank := make([]float64, len(ranks))
		for i, r := range ranks {
			byRank[r] = out[i][0].Mu
		}
		for r := 1; r < len(byRank); r++ {
			if !(byRank[r-1] > byRank[r]) {
				t.Errorf("%v: mus by rank %v not strictly decreasing", k, byRank)
			}
		}
		if !(byRank[0] > DefaultMu && byRank[len(byRank)-1] < DefaultMu) {
			t.Errorf("%v: first/last did not move up/down: %v", k, byRank)
		}
		for i := range out {
			if out[i][0].Sigma >= DefaultSigma {
				t.Errorf("%v: sigma did not shrink for team %d: %v", k, i, out[i][0].Sigma)
			}
		}
	}
}

// checkSigmaShare verifies that within each team the mean shift per unit
// of (tau-widened) variance is the same for every player, and that more
// uncertain players lose a larger fraction of their variance.
func checkSigmaShare(t *testing.T, m Model, before, after [][]Rating) {
	t.Helper()
	tau2 := m.Tau * m.Tau
	for i := range before {
		var perVar float64
		for j := range before[i] {
			v := before[i][j].Sigma*before[i][j].Sigma + tau2
			got := (after[i][j].Mu - before[i][j].Mu) / v
			if j == 0 {
				perVar = got
			} else if !near(got, perVar, 1e-12) {
				t.Errorf("%v team %d player %d: shift per variance %v, player 0 has %v", m.Kind, i, j, got, perVar)
			}
			if perVar == 0 {
				t.Errorf("%v team %d: no mean shift", m.Kind, i)
			}
			for l := range before[i] {
				vl := before[i][l].Sigma*before[i][l].Sigma + tau2
				if vl <= v {
					continue
				}
				// Player l is less certain, so its variance shrinks by a
				// larger fraction.
				fj := after[i][j].Sigma * after[i][j].Sigma / v
				fl := after[i][l].Sigma * after[i][l].Sigma / vl
				if !(fl < fj) {
					t.Errorf("%v team %d: player %d (var %v) kept %v, player %d (var %v) kept %v",
						m.Kind, i, l, vl, fl, j, v, fj)
				}
			}
		}
	}
}

func TestTeamUpdatesSharedBySigma(t *testing.T) {
	twoVTwo := [][]Rating{
		{{Mu: 25, Sigma: 2}, {Mu: 25, Sigma: 6}},
		{{Mu: 27, Sigma: 4}, {Mu: 23, Sigma: 8}},
	}
	fiveVFive := make([][]Rating, 2)
	for i := range fiveVFive {
		for j := range 5 {
			fiveVFive[i] = append(fiveVFive[i], Rating{Mu: 20 + float64(3*i+j), Sigma: 1 + float64(j+2*i)})
		}
	}
	for _, k := range kinds {
		m := modelOf(k)
		for _, teams := range [][][]Rating{twoVTwo, fiveVFive} {
			out := mustRate(t, m, teams, []int{0, 1})
			checkSigmaShare(t, m, teams, out)
			// Winners all rise and losers all fall.
			for j := range out[0] {
				if !(out[0][j].Mu > teams[0][j].Mu) || !(out[1][j].Mu < teams[1][j].Mu) {
					t.Errorf("%v %dv%d: wrong direction %v -> %v", k, len(teams[0]), len(teams[1]), teams, out)
				}
			}
		}
	}
	// In the 2v2, the team's total shift is the same whichever player
	// carries the uncertainty: only the split changes.
	swapped := [][]Rating{{twoVTwo[0][1], twoVTwo[0][0]}, twoVTwo[1]}
	a := mustRate(t, DefaultModel(), twoVTwo, []int{0, 1})
	b := mustRate(t, DefaultModel(), swapped, []int{0, 1})
	if !near(a[0][0].Mu, b[0][1].Mu, tol) || !near(a[0][1].Mu, b[0][0].Mu, tol) {
		t.Errorf("player order within a team changed updates: %v vs %v", a, b)
	}
	// Sigma 6 vs 2: about nine times the variance (after the tau step),
	// so about nine times the shift.
	tau2 := DefaultTau * DefaultTau
	ratio := (a[0][1].Mu - 25) / (a[0][0].Mu - 25)
	if want := (36 + tau2) / (4 + tau2); !near(ratio, want, 1e-9) {
		t.Errorf("sigma-6 / sigma-2 shift ratio %v, want %v", ratio, want)
	}
}

// TestSigmaBounds runs random matches and checks the invariants every
// update must keep: sigma never grows past the tau step, never shrinks
// by more than kappa allows, and everything stays finite.
func TestSigmaBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range kinds {
		for _, kappa := range []float64{DefaultKappa, 0.5, 0.95} {
			m := modelOf(k)
			m.Kappa = kappa
			for range 300 {
				nTeams := 2 + rng.IntN(6)
				teams := make([][]Rating, nTeams)
				ranks := make([]int, nTeams)
				for i := range teams {
					ranks[i] = rng.IntN(nTeams)
					for range 1 + rng.IntN(5) {
						teams[i] = append(teams[i], Rating{Mu: rng.Float64()*80 - 20, Sigma: 0.01 + rng.Float64()*12})
					}
				}
				out := mustRate(t, m, teams, ranks)
				for i := range out {
					for j, p := range out[i] {
						pre := teams[i][j].Sigma*teams[i][j].Sigma + m.Tau*m.Tau
						post := p.Sigma * p.Sigma
						if math.IsNaN(p.Mu) || math.IsInf(p.Mu, 0) || !(post <= pre*(1+1e-12)) ||
							!(post >= pre*kappa*(1-1e-12)) {
							t.Fatalf("%v kappa %v: %+v -> %+v (variance %v -> %v)", k, kappa, teams[i][j], p, pre, post)
						}
					}
				}
			}
		}
	}
}

func TestSigmaFloorAndExtremes(t *testing.T) {
	m := DefaultModel()
	m.Tau = 0
	// A sigma so small that its square underflows still rates cleanly.
	tiny := Rating{Mu: 25, Sigma: 1e-300}
	out := mustRate(t, m, [][]Rating{{tiny}, {tiny}}, []int{0, 1})
	for i := range out {
		if !(out[i][0].Sigma >= minSigma) || math.IsNaN(out[i][0].Mu) {
			t.Errorf("tiny sigma gave %+v", out[i][0])
		}
	}
	// Very large means must not overflow exp(mu/c).
	huge := [][]Rating{{{Mu: 1e6, Sigma: 1}}, {{Mu: -1e6, Sigma: 1}}, {{Mu: 5e5, Sigma: 1}}}
	for _, k := range kinds {
		m.Kind = k
		out := mustRate(t, m, huge, []int{2, 0, 1})
		for i := range out {
			if p := out[i][0]; math.IsNaN(p.Mu) || math.IsInf(p.Mu, 0) || math.IsNaN(p.Sigma) {
				t.Errorf("%v: large means gave %+v", k, p)
			}
		}
	}
}

func TestRateDoesNotModifyInput(t *testing.T) {
	teams := [][]Rating{{Default(), Default()}, {Default(), {Mu: 30, Sigma: 3}}}
	snapshot := [][]Rating{slices.Clone(teams[0]), slices.Clone(teams[1])}
	ranks := []int{1, 0}
	out := mustRate(t, DefaultModel(), teams, ranks)
	for i := range teams {
		if !slices.Equal(teams[i], snapshot[i]) {
			t.Fatalf("input team %d modified: %v", i, teams[i])
		}
		if len(out[i]) != len(teams[i]) {
			t.Fatalf("team %d: %d ratings out, %d in", i, len(out[i]), len(teams[i]))
		}
	}
	// Appending to one returned team must not clobber the next.
	next := out[1][0]
	_ = append(out[0], Rating{})
	if out[1][0] != next {
		t.Fatal("returned teams share capacity")
	}
}

func TestRateErrors(t *testing.T) {
	good := []Rating{Default()}
	bad := func(mutate func(*Model)) Model {
		m := DefaultModel()
		mutate(&m)
		return m
	}
	cases := []struct {
		name  string
		model Model
		teams [][]Rating
		ranks []int
		want  error
	}{
		{"no teams", DefaultModel(), nil, nil, ErrTooFewTeams},
		{"one team", DefaultModel(), [][]Rating{good}, []int{0}, ErrTooFewTeams},
		{"empty team", DefaultModel(), [][]Rating{good, {}}, []int{0, 1}, ErrEmptyTeam},
		{"few ranks", DefaultModel(), [][]Rating{good, good}, []int{0}, ErrRankCount},
		{"many ranks", DefaultModel(), [][]Rating{good, good}, []int{0, 1, 2}, ErrRankCount},
		{"nan mu", DefaultModel(), [][]Rating{good, {{Mu: math.NaN(), Sigma: 1}}}, []int{0, 1}, ErrInvalidRating},
		{"inf mu", DefaultModel(), [][]Rating{good, {{Mu: math.Inf(1), Sigma: 1}}}, []int{0, 1}, ErrInvalidRating},
		{"zero sigma", DefaultModel(), [][]Rating{good, {{Mu: 25, Sigma: 0}}}, []int{0, 1}, ErrInvalidRating},
		{"negative sigma", DefaultModel(), [][]Rating{good, {{Mu: 25, Sigma: -1}}}, []int{0, 1}, ErrInvalidRating},
		{"nan sigma", DefaultModel(), [][]Rating{good, {{Mu: 25, Sigma: math.NaN()}}}, []int{0, 1}, ErrInvalidRating},
		{"inf sigma", DefaultModel(), [][]Rating{good, {{Mu: 25, Sigma: math.Inf(1)}}}, []int{0, 1}, ErrInvalidRating},
		{"overflowing sigma", DefaultModel(), [][]Rating{good, {{Mu: 25, Sigma: 1e200}}}, []int{0, 1}, ErrInvalidRating},
		{"zero model", Model{}, [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"zero beta", bad(func(m *Model) { m.Beta = 0 }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"nan beta", bad(func(m *Model) { m.Beta = math.NaN() }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"zero kappa", bad(func(m *Model) { m.Kappa = 0 }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"kappa above one", bad(func(m *Model) { m.Kappa = 1.5 }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"negative tau", bad(func(m *Model) { m.Tau = -1 }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"inf tau", bad(func(m *Model) { m.Tau = math.Inf(1) }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
		{"unknown kind", bad(func(m *Model) { m.Kind = 7 }), [][]Rating{good, good}, []int{0, 1}, ErrInvalidModel},
	}
	for _, tc := range cases {
		out, err := tc.model.Rate(tc.teams, tc.ranks)
		if !errors.Is(err, tc.want) || out != nil {
			t.Errorf("%s: got (%v, %v), want %v", tc.name, out, err, tc.want)
		}
	}
	// Tau zero is a valid choice, not an error.
	m := DefaultModel()
	m.Tau = 0
	if _, err := m.Rate([][]Rating{good, good}, []int{0, 1}); err != nil {
		t.Errorf("tau 0: %v", err)
	}
}

func TestWinProbability(t *testing.T) {
	m := DefaultModel()
	m.Tau = 0
	a := []Rating{{Mu: 30, Sigma: 5}}
	b := []Rating{{Mu: 20, Sigma: 5}}
	// c² = 5² + 5² + 2·(25/6)² = 84.722222, c = 9.204468;
	// P = 1/(1 + exp(−10/9.204468)) = 1/(1 + exp(−1.086429)) = 0.747709.
	if got := m.WinProbability(a, b); !near(got, 0.7477086738135299, tol) {
		t.Errorf("WinProbability = %v, want 0.747709", got)
	}
	if got := m.WinProbability(a, b) + m.WinProbability(b, a); !near(got, 1, tol) {
		t.Errorf("P(a,b)+P(b,a) = %v", got)
	}
	if got := DefaultModel().WinProbability([]Rating{Default()}, []Rating{Default()}); got != 0.5 {
		t.Errorf("equal teams: %v, want 0.5", got)
	}
	// Teams sum their players: two 25s beat one 30.
	if got := DefaultModel().WinProbability([]Rating{Default(), Default()}, []Rating{{Mu: 30, Sigma: 25.0 / 3}}); !(got > 0.5) {
		t.Errorf("2x25 vs 30: %v", got)
	}
	// The model's prediction matches the update: a favourite's expected
	// win moves its rating by σ²/c · (1 − P).
	out := mustRate(t, m, [][]Rating{a, b}, []int{0, 1})
	c := math.Sqrt(25 + 25 + 2*m.Beta*m.Beta)
	if want := 25 / c * (1 - m.WinProbability(a, b)); !near(out[0][0].Mu-30, want, tol) {
		t.Errorf("update %v disagrees with prediction %v", out[0][0].Mu-30, want)
	}
	// Degenerate: no uncertainty at all.
	z := Model{}
	if z.WinProbability([]Rating{{Mu: 2}}, []Rating{{Mu: 1}}) != 1 || z.WinProbability(nil, nil) != 0.5 {
		t.Error("zero-uncertainty win probability")
	}
}

func TestMatchQuality(t *testing.T) {
	m := DefaultModel()
	m.Tau = 0
	fresh := []Rating{Default()}
	// Two fresh players: 2β² / c² = 34.722222 / 173.611111 = 1/5, no gap,
	// so the quality is sqrt(1/5).
	if got := m.MatchQuality([][]Rating{fresh, fresh}); !near(got, math.Sqrt(0.2), tol) {
		t.Errorf("fresh 1v1 quality %v, want %v", got, math.Sqrt(0.2))
	}
	// Identical teams in a free-for-all score the same as one pair.
	if got := m.MatchQuality([][]Rating{fresh, fresh, fresh, fresh}); !near(got, math.Sqrt(0.2), tol) {
		t.Errorf("fresh FFA quality %v", got)
	}
	// A wider gap is a worse match, and the score stays in [0, 1].
	prev := 1.0
	for _, gap := range []float64{0, 5, 10, 20, 50, 1000} {
		q := m.MatchQuality([][]Rating{fresh, {{Mu: 25 + gap, Sigma: 25.0 / 3}}})
		if !(q >= 0 && q <= 1) || (gap > 0 && !(q < prev)) {
			t.Errorf("gap %v: quality %v (previous %v)", gap, q, prev)
		}
		prev = q
	}
	// Certainty makes an even match better.
	sure := []Rating{{Mu: 25, Sigma: 1}}
	if !(m.MatchQuality([][]Rating{sure, sure}) > m.MatchQuality([][]Rating{fresh, fresh})) {
		t.Error("well-known players should make a better match than unknowns")
	}
	// One outlier in a free-for-all pulls quality down.
	even := [][]Rating{sure, sure, sure, sure}
	odd := [][]Rating{sure, sure, sure, {{Mu: 45, Sigma: 1}}}
	if !(m.MatchQuality(odd) < m.MatchQuality(even)) {
		t.Error("outlier did not lower free-for-all quality")
	}
	if m.MatchQuality([][]Rating{fresh}) != 0 || m.MatchQuality(nil) != 0 {
		t.Error("fewer than two teams should score 0")
	}
	// Symmetric in team order.
	x := [][]Rating{{{Mu: 20, Sigma: 3}, {Mu: 30, Sigma: 5}}, {{Mu: 26, Sigma: 2}, {Mu: 22, Sigma: 7}}}
	y := [][]Rating{x[1], x[0]}
	if !near(m.MatchQuality(x), m.MatchQuality(y), tol) {
		t.Error("quality depends on team order")
	}
}

func TestKindString(t *testing.T) {
	if PlackettLuce.String() != "plackett-luce" || BradleyTerryFull.String() != "bradley-terry-full" || Kind(9).String() != "Kind(9)" {
		t.Error("Kind.String")
	}
}

func BenchmarkRate5v5(b *testing.B) {
	teams := make([][]Rating, 2)
	for i := range teams {
		for j := range 5 {
			teams[i] = append(teams[i], Rating{Mu: 20 + float64(i+j), Sigma: 3 + float64(j)})
		}
	}
	ranks := []int{0, 1}
	for _, k := range kinds {
		m := modelOf(k)
		b.Run(k.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Rate(teams, ranks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
