package leaderboard

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Service's: every operation, its latency and outcome,
// every rejection by reason, resets.
type metrics struct {
	ops        *prometheus.CounterVec
	seconds    *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	writes     *prometheus.CounterVec
	resets     prometheus.Counter
	boards     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_leaderboard_requests_total", Help: "Leaderboard operations, by operation and outcome (ok, invalid_argument, not_found, permission_denied, failed_precondition, error).",
		}, []string{"op", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rally_leaderboard_request_seconds", Help: "Latency of leaderboard operations, including the durable commit of writes.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 14),
		}, []string{"op"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_leaderboard_rejections_total", Help: "Requests refused before reaching the backend, by reason (bad_board, bad_owner, score_range, metadata_too_large, bad_limit, bad_cursor, bad_period, too_many_owners, authoritative, not_owner, not_admin, no_session).",
		}, []string{"reason"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_leaderboard_writes_total", Help: "Scores written, by whether the record changed (changed, unchanged) or the operator left the range (out_of_range).",
		}, []string{"result"}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_leaderboard_resets_total", Help: "Periods that ended on their board's reset schedule and were archived.",
		}),
		boards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_leaderboard_boards", Help: "Boards defined.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.ops, m.seconds, m.rejections, m.writes, m.resets, m.boards)
	}
	return m
}

// commitMetrics are the embedded backend's group commit.
type commitMetrics struct {
	commitQueue   prometheus.Gauge
	commitBatch   prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
	records       prometheus.Gauge
}

func newCommitMetrics(reg prometheus.Registerer) *commitMetrics {
	m := &commitMetrics{
		commitQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_leaderboard_commit_queue", Help: "Changes waiting for the next group commit to the store.",
		}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_leaderboard_commit_batch_size", Help: "Changes written per store transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_leaderboard_commit_seconds", Help: "Duration of one group commit, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_leaderboard_commit_errors_total", Help: "Group commits the store refused; their writers got the error and the periods reload from the store.",
		}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_leaderboard_records_loaded", Help: "Records held in memory by the embedded backend, over all cached periods.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.commitQueue, m.commitBatch, m.commitSeconds, m.commitErrors, m.records)
	}
	return m
}
