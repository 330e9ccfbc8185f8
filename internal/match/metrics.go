package match

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	submitted      *prometheus.CounterVec
	matches        *prometheus.CounterVec
	ended          *prometheus.CounterVec
	widened        *prometheus.CounterVec
	claimConflicts prometheus.Counter
	allocFailures  prometheus.Counter
	timeToMatch    *prometheus.HistogramVec
	spread         *prometheus.HistogramVec
	passSeconds    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_match_tickets_submitted_total", Help: "Tickets accepted into a queue.",
		}, []string{"queue"}),
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_match_matches_total", Help: "Matches made and allocated.",
		}, []string{"queue"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_match_tickets_ended_total", Help: "Tickets that left a queue unmatched, by outcome (cancelled, expired).",
		}, []string{"outcome"}),
		widened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_match_widenings_total", Help: "Times a ticket's search widened.",
		}, []string{"queue"}),
		claimConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_match_claim_conflicts_total", Help: "Claims lost because a ticket was no longer waiting (another pass or replica took it).",
		}),
		allocFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_match_allocation_failures_total", Help: "Matches whose allocation failed; their tickets were requeued at the front.",
		}),
		timeToMatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rally_match_time_to_match_seconds", Help: "Wait from ticket to match.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"queue"}),
		spread: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rally_match_rating_spread", Help: "Highest minus lowest ticket rating in a match.",
			Buckets: []float64{10, 25, 50, 100, 200, 400, 800, 1600},
		}, []string{"queue"}),
		passSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_match_pass_seconds", Help: "Duration of one matching pass over all pools.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.submitted, m.matches, m.ended, m.widened, m.claimConflicts, m.allocFailures,
			m.timeToMatch, m.spread, m.passSeconds)
	}
	return m
}
