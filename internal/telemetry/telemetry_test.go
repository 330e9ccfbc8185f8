package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rallyhq/rally/internal/buildinfo"
)

func TestLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(&buf, "auto", "info").Info("hello", "k", 1) // a buffer is not a terminal: JSON
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["msg"] != "hello" {
		t.Fatalf("auto on a non-terminal: %q %v", buf.String(), err)
	}
	buf.Reset()
	log := NewLogger(&buf, "text", "warn")
	log.Info("dropped")
	log.Warn("kept")
	if out := buf.String(); strings.Contains(out, "dropped") || !strings.Contains(out, "msg=kept") {
		t.Fatalf("text/warn: %q", out)
	}
}

func TestPropagatorExtractsW3CAndB3(t *testing.T) {
	p := Propagator()
	for name, h := range map[string]http.Header{
		"w3c":       {"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		"b3 multi":  {"X-B3-Traceid": {"4bf92f3577b34da6a3ce929d0e0e4736"}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-B3-Sampled": {"1"}},
		"b3 single": {"B3": {"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"}},
	} {
		ctx := p.Extract(context.Background(), propagation.HeaderCarrier(h))
		sc := trace.SpanContextFromContext(ctx)
		if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !sc.IsSampled() {
			t.Errorf("%s: extracted %v", name, sc)
		}
	}
}

func TestRegistryHasRuntimeAndBuildInfo(t *testing.T) {
	reg := NewRegistry(buildinfo.Info{Version: "v1", Commit: "abc", GoVersion: "go"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, want := range []string{"rally_build_info", "go_gc_pauses_seconds", "process_cpu_seconds_total", "go_goroutines"} {
		if !have[want] {
			t.Errorf("missing %s", want)
		}
	}
}

func TestTracingOffIsNoop(t *testing.T) {
	tr, err := NewTracerProvider(TraceOptions{ServiceName: "x"}, buildinfo.Get())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "s")
	if span.SpanContext().IsValid() {
		t.Fatal("a span was recorded with tracing off")
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
