package realtime

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections   prometheus.Gauge
	messagesIn    prometheus.Counter
	framesOut     prometheus.Counter
	rejections    *prometheus.CounterVec
	calls         *prometheus.CounterVec
	callsInFlight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_realtime_connections", Help: "Open WebSocket connections.",
		}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_realtime_messages_in_total", Help: "Envelopes received from clients.",
		}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_realtime_frames_out_total", Help: "WebSocket messages written to clients.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_realtime_rejections_total",
			Help: "Connections refused or cut off, by reason (unauthenticated, too_large, rate_limited, malformed, slow_consumer, replaced, too_many_calls, pong_timeout, session_ended).",
		}, []string{"reason"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_realtime_calls_total",
			Help: "Service calls made over sockets, by method and outcome (ok, bad_request, not_found, denied, resource_exhausted, cancelled, error).",
		}, []string{"method", "code"}),
		callsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_realtime_calls_in_flight", Help: "Socket calls running, streams included.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.messagesIn, m.framesOut, m.rejections, m.calls, m.callsInFlight)
	}
	return m
}
