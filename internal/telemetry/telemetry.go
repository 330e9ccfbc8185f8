// Package telemetry sets up the three signals every domain reports through:
// structured logs (slog), traces (OpenTelemetry) and metrics (a Prometheus
// registry handed to each domain).
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/rallyhq/rally/internal/buildinfo"
)

// NewLogger returns a logger writing to w. Format "auto" picks text when w is
// a terminal and JSON otherwise (containers, log shippers).
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		lvl = slog.LevelInfo
	}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: readableDurations}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// readableDurations logs durations as "1.5s" rather than nanosecond counts.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// NewRegistry returns the Prometheus registry served on /metrics, with Go
// runtime (GC pause histograms included), process and build metrics.
func NewRegistry(info buildinfo.Info) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsGC, collectors.MetricsScheduler, collectors.MetricsMemory)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rally_build_info",
		Help: "Always 1; labels identify the running Rally build.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(info.Version, info.Commit, info.GoVersion).Set(1)
	reg.MustRegister(build)
	return reg
}

// Propagator extracts and injects W3C tracecontext and baggage, and extracts
// B3 (single and multi header) from clients instrumented with Zipkin-style
// tracers.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{},
		propagation.Baggage{},
		b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)),
	)
}

// TraceOptions configures NewTracerProvider.
type TraceOptions struct {
	ServiceName  string
	OTLPEndpoint string // host:port; empty turns tracing off
	OTLPInsecure bool
	SampleRatio  float64
	InstanceID   string
}

// Tracing is a configured tracer provider and its shutdown.
type Tracing struct {
	Provider trace.TracerProvider
	shutdown func(context.Context) error
}

// NewTracerProvider returns an OTLP/gRPC exporting provider when an endpoint
// is set, and a no-op one otherwise (spans cost nothing when off).
func NewTracerProvider(opts TraceOptions, info buildinfo.Info) (*Tracing, error) {
	if opts.OTLPEndpoint == "" {
		return &Tracing{Provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}, nil
	}
	expOpts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(opts.OTLPEndpoint)}
	if opts.OTLPInsecure {
		expOpts = append(expOpts, otlptracegrpc.WithInsecure())
	}
	// The exporter connects lazily: a missing collector never blocks start-up.
	exp, err := otlptracegrpc.New(context.Background(), expOpts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(opts.ServiceName),
		semconv.ServiceVersion(info.Version),
		semconv.ServiceInstanceID(opts.InstanceID),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(opts.SampleRatio))),
	)
	return &Tracing{Provider: tp, shutdown: tp.Shutdown}, nil
}

// Shutdown flushes pending spans. Give ctx a deadline: the exporter waits for
// an absent collector until it expires.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }
