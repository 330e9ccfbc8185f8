package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

var rallyBin string

// TestMain builds the real server once, so the load runs against the
// binary users run.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "rally-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rallyBin = filepath.Join(dir, "rally")
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", rallyBin, "github.com/rallyhq/rally/cmd/rally")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building rally:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestSyncEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	const clients, roomSize, rate = 8, 4, 20.0
	for _, mode := range []string{SyncRelayed, SyncAuthoritative} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "sync.json")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := Sync(ctx, SyncOptions{
				Binary: rallyBin, Clients: clients, RoomSize: roomSize, Payload: 64, Rate: rate,
				Duration: 2 * time.Second, Warmup: 500 * time.Millisecond, Mode: mode, TickRate: 30,
				JSONFile: file, ConnectConcurrency: 4,
			})
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			res.WriteTable(&out)
			t.Log("\n" + out.String())

			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var j map[string]any
			if err := json.Unmarshal(raw, &j); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"scenario", "mode", "clients", "rooms", "room_size", "payload_bytes", "rate_hz",
				"duration_s", "ingress_msgs_per_sec", "egress_frames_per_sec", "latency_ms", "gc_pause_ms",
				"server_cpu_cores", "server_rss_mb", "loadgen_cpu_cores", "errors", "latency_definition", "at",
				"goos", "goarch", "cpus"} {
				if _, ok := j[k]; !ok {
					t.Errorf("JSON lacks %q", k)
				}
			}
			for _, k := range []string{"p50", "p90", "p99", "max"} {
				if _, ok := j["latency_ms"].(map[string]any)[k]; !ok {
					t.Errorf("latency_ms lacks %q", k)
				}
			}
			for _, k := range []string{"p50", "p95", "p99", "max"} {
				if _, ok := j["gc_pause_ms"].(map[string]any)[k]; !ok {
					t.Errorf("gc_pause_ms lacks %q", k)
				}
			}
			if j["scenario"] != "sync" || j["mode"] != mode || !strings.HasPrefix(j["latency_definition"].(string), mode) {
				t.Errorf("scenario %v, mode %v, definition %v", j["scenario"], j["mode"], j["latency_definition"])
			}

			if res.Errors != 0 {
				t.Errorf("errors %d: %v", res.Errors, res.ErrorSample)
			}
			if res.Rooms != clients/roomSize {
				t.Errorf("rooms %d", res.Rooms)
			}
			want := clients * rate
			if res.IngressMsgsPerSec < 0.8*want || res.IngressMsgsPerSec > 1.1*want {
				t.Errorf("ingress %.1f/s, want about %.0f/s", res.IngressMsgsPerSec, want)
			}
			if res.LatencySamples == 0 || res.LatencySamples < res.LatencyExpected*9/10 {
				t.Errorf("latency samples %d of %d expected", res.LatencySamples, res.LatencyExpected)
			}
			if res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Latency.Max < res.Latency.P99 {
				t.Errorf("latency %+v", res.Latency)
			}
			// Relayed: each input reaches the 3 others; authoritative: every
			// client gets a frame per tick.
			wantOut := want * (roomSize - 1)
			if mode == SyncAuthoritative {
				wantOut = clients * 30
			}
			if res.EgressFramesPerSec < 0.8*wantOut || res.EgressFramesPerSec > 1.2*wantOut {
				t.Errorf("egress %.1f/s, want about %.0f/s", res.EgressFramesPerSec, wantOut)
			}
			if res.ServerCPU <= 0 || res.ServerRSSMB <= 0 || res.MetricsError != "" {
				t.Errorf("server cpu %v, rss %v, metrics error %q", res.ServerCPU, res.ServerRSSMB, res.MetricsError)
			}
			if mode == SyncAuthoritative && res.Latency.P99 > 1000.0/30+50 {
				t.Errorf("authoritative p99 %.1f ms, far beyond one tick", res.Latency.P99)
			}
		})
	}
}

func TestSamplerThins(t *testing.T) {
	s := newSampler(8, 4)
	for i := range int64(100) {
		s.add(i)
	}
	if s.n != 100 || s.max != 99 {
		t.Fatalf("n %d max %d", s.n, s.max)
	}
	if len(s.kept) > 8 || s.stride != 16 {
		t.Fatalf("kept %v stride %d", s.kept, s.stride)
	}
	for _, v := range s.kept {
		if v%s.stride != 0 {
			t.Fatalf("kept %v: not every %d-th", s.kept, s.stride)
		}
	}
	if got := s.thinTo(32); !slices.Equal(got, []int64{0, 32, 64, 96}) {
		t.Fatalf("thinTo(32) = %v", got)
	}
	small := newSampler(1000, 10)
	for i := range int64(50) {
		small.add(i)
	}
	if len(small.kept) != 50 || small.stride != 1 {
		t.Fatalf("under the limit every sample is kept: %d, stride %d", len(small.kept), small.stride)
	}
}

func TestLogHistBuckets(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<20; us++ {
		i := histIndex(us)
		if i < prev || i > prev+1 {
			t.Fatalf("index %d for %d µs after %d", i, us, prev)
		}
		if us > histUpper(i) || (i > 0 && us <= histUpper(i-1)) {
			t.Fatalf("%d µs outside bucket %d (up to %d)", us, i, histUpper(i))
		}
		prev = i
	}
	var h logHist
	var tot histTotal
	for ms := int64(1); ms <= 100; ms++ {
		h.add(ms * 1e6)
	}
	tot.drain(&h)
	if p := tot.percentileMS(99); p < 99 || p > 99*1.125 {
		t.Fatalf("p99 %.2f ms", p)
	}
	if h != (logHist{}) {
		t.Fatal("drain left counts behind")
	}
}

func histo(count uint64, buckets map[float64]uint64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(count)}
	for _, ub := range []float64{0.001, 0.01, 0.1, math.Inf(1)} {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(buckets[ub])})
	}
	return h
}

func TestHistDeltaPercentiles(t *testing.T) {
	before := histo(10, map[float64]uint64{0.001: 10, 0.01: 10, 0.1: 10, math.Inf(1): 10})
	// 100 new observations: 90 up to 1 ms, 9 up to 10 ms, 1 up to 100 ms.
	after := histo(110, map[float64]uint64{0.001: 100, 0.01: 109, 0.1: 110, math.Inf(1): 110})
	ps, maxV, n := histDeltaPercentiles(before, after, 50, 95, 99, 100)
	if n != 100 || !slices.Equal(ps, []float64{0.001, 0.01, 0.01, 0.1}) || maxV != 0.1 {
		t.Fatalf("ps %v max %v n %d", ps, maxV, n)
	}
	ps, maxV, n = histDeltaPercentiles(after, after, 50)
	if n != 0 || ps[0] != 0 || maxV != 0 {
		t.Fatalf("no GC: ps %v max %v n %d", ps, maxV, n)
	}
	// Beyond the last finite bound: report that bound.
	over := histo(111, map[float64]uint64{0.001: 100, 0.01: 109, 0.1: 110, math.Inf(1): 111})
	ps, maxV, _ = histDeltaPercentiles(after, over, 100)
	if ps[0] != 0.1 || maxV != 0.1 {
		t.Fatalf("overflow: ps %v max %v", ps, maxV)
	}
}

func TestSyncServerEnvFitsTheLoad(t *testing.T) {
	env := serverEnv(SyncOptions{Mode: SyncAuthoritative, Rate: 168, TickRate: 30})
	for _, want := range []string{"RALLY_REALTIME_MAX_MESSAGES_PER_SECOND=376", "RALLY_REALTIME_MESSAGE_BURST=752",
		"RALLY_REALTIME_SEND_QUEUE=1024"} {
		if !slices.Contains(env, want) {
			t.Errorf("%v lacks %s", env, want)
		}
	}
	env = serverEnv(SyncOptions{Mode: SyncRelayed, Rate: 10})
	if !slices.Contains(env, "RALLY_REALTIME_MAX_MESSAGES_PER_SECOND=60") {
		t.Errorf("never below the defaults: %v", env)
	}
}
