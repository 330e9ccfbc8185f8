package liveconfig

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reloads     *prometheus.CounterVec
	rejects     *prometheus.CounterVec
	propagation *prometheus.HistogramVec
	buildTime   prometheus.Histogram
	version     *prometheus.GaugeVec
	loadedAt    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_liveconfig_reloads_total", Help: "Configuration versions accepted and swapped in, by source.",
		}, []string{"source"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_liveconfig_rejects_total", Help: "Configuration versions refused as invalid (the last good one stayed live), by source.",
		}, []string{"source"}),
		propagation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rally_liveconfig_propagation_seconds",
			Help:    "From a change (file event, or publication on NATS by the node that fetched the commit) to the new version live on this node.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"source"}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_liveconfig_build_seconds", Help: "Parsing and validating a whole configuration.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rally_liveconfig_version_info", Help: "The configuration version live on this node (value 1).",
		}, []string{"version"}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_liveconfig_loaded_timestamp_seconds", Help: "When the live configuration version was swapped in.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.rejects, m.propagation, m.buildTime, m.version, m.loadedAt)
	}
	return m
}
