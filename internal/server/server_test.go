package server

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/rallyhq/rally/internal/config"
	"github.com/rallyhq/rally/internal/room"
)

// receiver is a real OTLP/gRPC trace endpoint that records the spans it is
// sent.
type receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string]string            // trace id (hex) -> span name
	attrs map[string]map[string]string // span name -> string attributes
	trace map[string]string            // span name -> trace id (hex)
	got   chan struct{}
}

func (r *receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.spans[hex.EncodeToString(sp.TraceId)] = sp.Name
				r.trace[sp.Name] = hex.EncodeToString(sp.TraceId)
				r.attrs[sp.Name] = map[string]string{}
				for _, kv := range sp.Attributes {
					r.attrs[sp.Name][kv.Key] = kv.Value.GetStringValue()
				}
			}
		}
	}
	select {
	case r.got <- struct{}{}:
	default:
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func startReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &receiver{spans: map[string]string{}, attrs: map[string]map[string]string{},
		trace: map[string]string{}, got: make(chan struct{}, 1)}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, rec)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return rec, ln.Addr().String()
}

func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr, cfg.GRPC.Addr, cfg.NATS.Addr = "127.0.0.1:0", "127.0.0.1:0", "off"
	return cfg
}

// startServer starts a server; register adds game logic before it starts.
func startServer(t testing.TB, cfg config.Config, register ...func(*room.Registry)) *Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s := New(cfg, log)
	for _, r := range register {
		r(s.Handlers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func shutdown(t testing.TB, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// Incoming W3C and B3 trace headers continue the caller's trace, and spans
// reach the configured OTLP endpoint (flushed at shutdown at the latest).
func TestTracesPropagateInAndExportOverOTLP(t *testing.T) {
	rec, endpoint := startReceiver(t)
	cfg := testConfig(t)
	cfg.Telemetry.OTLPEndpoint, cfg.Telemetry.OTLPInsecure = endpoint, true
	s := startServer(t, cfg)

	const w3cTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const b3Trace = "80f198ee56343ba864fe8b2a57d3eff7"
	base := "http://" + s.Addrs().HTTP
	for _, headers := range []map[string]string{
		{"traceparent": "00-" + w3cTrace + "-00f067aa0ba902b7-01"},
		{"X-B3-TraceId": b3Trace, "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"},
		{}, // probes are not traced; this one only checks they still answer
	} {
		path := "/version"
		if len(headers) == 0 {
			path = "/readyz"
		}
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	shutdown(t, s)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, id := range []string{w3cTrace, b3Trace} {
		if name, ok := rec.spans[id]; !ok || name != "GET /version" {
			t.Errorf("trace %s: span %q (exported: %v)", id, name, rec.spans)
		}
	}
	for _, name := range rec.spans {
		if name == "GET /readyz" {
			t.Errorf("probe was traced")
		}
	}
}

// With no endpoint there is no exporter, and shutdown does not wait for one.
func TestNoEndpointMeansNoExportAndFastShutdown(t *testing.T) {
	s := startServer(t, testConfig(t))
	begin := time.Now()
	shutdown(t, s)
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
}

// A failed start unwinds what had started: the ports are free again.
func TestFailedStartReleasesListeners(t *testing.T) {
	cfg := testConfig(t)
	cfg.NATS.URL = "nats://127.0.0.1:1" // nothing listens there
	cfg.NATS.ConnectTimeout = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Addr = ln.Addr().String()
	ln.Close()

	s := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("started without NATS")
	}
	// The server's own listeners are closed (re-binding the port would race
	// with other test processes taking the freed port).
	for name, l := range map[string]net.Listener{"http": s.httpLn, "grpc": s.grpcLn} {
		// Setting a deadline fails only on a closed listener.
		if err := l.(*net.TCPListener).SetDeadline(time.Now()); err == nil {
			t.Fatalf("%s listener still open after a failed start", name)
		}
	}
}
