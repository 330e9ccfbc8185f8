package allocation

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests  *prometheus.CounterVec
	seconds   *prometheus.HistogramVec
	conflicts prometheus.Counter
	rejected  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, ix *index) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_allocation_requests_total",
			Help: "Allocation requests by result: allocated, unallocated (no Ready server matched), contention (too many lost races), invalid, error.",
		}, []string{"result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rally_allocation_seconds", Help: "Time to answer an allocation request, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_allocation_conflicts_total",
			Help: "Allocation writes the API server refused because the pod had changed (another allocator got it first); each was retried on another server.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_allocation_rejected_total", Help: "Allocation API calls refused before allocating, by reason (unauthenticated, bad_request).",
		}, []string{"reason"}),
	}
	if reg != nil {
		ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rally_allocation_ready_servers", Help: "Ready game servers the allocator can hand out, as its informer sees them.",
		}, func() float64 { return float64(ix.readyCount()) })
		reg.MustRegister(m.requests, m.seconds, m.conflicts, m.rejected, ready)
	}
	return m
}
