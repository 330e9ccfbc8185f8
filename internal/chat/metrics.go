package chat

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the label values of rally_chat_rejected_total.
const (
	rejectInvalid    = "invalid"      // bad channel id, cursor, empty or non-UTF-8 text
	rejectTooLarge   = "too_large"    // text over max_message_bytes
	rejectRate       = "rate_limited" // over the per-player rate
	rejectNotMember  = "not_member"   // not in the channel (or the room)
	rejectForbidden  = "forbidden"    // someone else's message
	rejectModeration = "moderation"   // the moderation hook said no
)

type metrics struct {
	messages    *prometheus.CounterVec
	revisions   *prometheus.CounterVec
	presence    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	conflicts   prometheus.Counter
	subscribers prometheus.Gauge
	dropped     prometheus.Counter
	delivered   prometheus.Counter
	undecodable prometheus.Counter
	publish     prometheus.Histogram
	history     prometheus.Histogram
	lag         prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_chat_messages_total", Help: "Messages stored, by channel kind.",
		}, []string{"kind"}),
		revisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_chat_revisions_total", Help: "Edits and deletes stored, by type.",
		}, []string{"type"}),
		presence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_chat_presence_total", Help: "Channel joins and leaves stored, by type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_chat_rejected_total",
			Help: "Requests refused, by reason: invalid, too_large, rate_limited, not_member, forbidden, moderation.",
		}, []string{"reason"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_chat_publish_conflicts_total",
			Help: "Writes retried because another writer (usually another node) got to the channel first.",
		}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_chat_subscribers", Help: "Open Subscribe streams on this node.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_chat_subscribers_dropped_total",
			Help: "Subscribe streams ended because the client did not keep up with its queue.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_chat_events_delivered_total", Help: "Events queued to this node's subscribers.",
		}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_chat_events_undecodable_total",
			Help: "Messages under rally.chat. in the stream that are not chat events (skipped).",
		}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_chat_publish_seconds", Help: "Time to store one chat event, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		history: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_chat_history_seconds", Help: "Time to read one page of history.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12),
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_chat_delivery_lag_seconds", Help: "From an event being stored to it reaching this node's subscriber queues.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
	}
	if reg != nil {
		m.messages = register(reg, m.messages)
		m.revisions = register(reg, m.revisions)
		m.presence = register(reg, m.presence)
		m.rejected = register(reg, m.rejected)
		m.conflicts = register(reg, m.conflicts)
		m.subscribers = register(reg, m.subscribers)
		m.dropped = register(reg, m.dropped)
		m.delivered = register(reg, m.delivered)
		m.undecodable = register(reg, m.undecodable)
		m.publish = register(reg, m.publish)
		m.history = register(reg, m.history)
		m.lag = register(reg, m.lag)
	}
	for _, r := range []string{rejectInvalid, rejectTooLarge, rejectRate, rejectNotMember, rejectForbidden, rejectModeration} {
		m.rejected.WithLabelValues(r) // every reason shows from the start, at 0
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same name, so a service restarted on one registry keeps counting.
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
