package roomevents

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	publishedVec *prometheus.CounterVec
	byType       map[Type]prometheus.Counter // resolved once: no label hashing per event
	retries      prometheus.Counter
	deadLettered prometheus.Counter
	queueFull    prometheus.Counter
	lost         prometheus.Counter
	latency      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, depth func() float64) metrics {
	m := metrics{
		publishedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_roomevents_published_total",
			Help: "Room events stored in the stream, by type (duplicates not counted).",
		}, []string{"type"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_roomevents_retries_total",
			Help: "Publish attempts repeated after a failure.",
		}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_roomevents_dead_lettered_total",
			Help: "Room events stored in the dead-letter stream after every retry failed.",
		}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_roomevents_queue_full_total",
			Help: "Room events refused because the publish queue stayed full.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_roomevents_lost_total",
			Help: "Room events neither stored nor dead-lettered (each is logged).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_roomevents_publish_seconds",
			Help: "Time from Publish accepting an event to the stream acknowledging it, queueing and retries included.",
			// 200µs to about 12s: an in-process ack up to a spent retry schedule.
			Buckets: prometheus.ExponentialBuckets(0.0002, 3, 11),
		}),
	}
	depthGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rally_roomevents_queue_depth",
		Help: "Room events accepted and waiting to be published.",
	}, depth)
	if reg != nil {
		m.publishedVec = register(reg, m.publishedVec)
		m.retries = register(reg, m.retries)
		m.deadLettered = register(reg, m.deadLettered)
		m.queueFull = register(reg, m.queueFull)
		m.lost = register(reg, m.lost)
		m.latency = register(reg, m.latency)
		// The depth gauge reads this publisher's queues, so it replaces one
		// left by an earlier publisher on the same registry.
		if err := reg.Register(depthGauge); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
			reg.Unregister(are.ExistingCollector)
			reg.MustRegister(depthGauge)
		}
	}
	m.byType = make(map[Type]prometheus.Counter, len(types))
	for _, t := range types {
		m.byType[t] = m.publishedVec.WithLabelValues(string(t))
	}
	return m
}

func (m *metrics) published(t Type) prometheus.Counter { return m.byType[t] }

// register registers c, or returns the collector already registered under
// the same name so counters keep counting across publisher restarts.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
