// Package bench holds Rally's load and start-up scenarios. Each prints a
// table of percentiles and can write the same figures as JSON under
// bench/results/.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/internal/launch"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// ColdstartOptions configures Coldstart.
type ColdstartOptions struct {
	Runs     int
	Binary   string
	JSONFile string
	// Timeout bounds one start.
	Timeout time.Duration
	// Match also measures exec to the first pair matched: after /readyz,
	// two fresh players log in and call FindOpponent on the duel queue.
	Match bool
}

// Latency summarises samples in milliseconds.
type Latency struct {
	Min     float64   `json:"min"`
	P50     float64   `json:"p50"`
	P90     float64   `json:"p90"`
	P99     float64   `json:"p99"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func summarise(samples []float64) *Latency {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	return &Latency{Min: s[0], P50: Percentile(s, 50), P90: Percentile(s, 90), P99: Percentile(s, 99), Max: s[len(s)-1], Samples: samples}
}

// ColdstartResult is the measured exec-to-ready latency.
type ColdstartResult struct {
	Scenario string    `json:"scenario"`
	Runs     int       `json:"runs"`
	MinMS    float64   `json:"min_ms"`
	P50MS    float64   `json:"p50_ms"`
	P90MS    float64   `json:"p90_ms"`
	P99MS    float64   `json:"p99_ms"`
	MaxMS    float64   `json:"max_ms"`
	MeanMS   float64   `json:"mean_ms"`
	Samples  []float64 `json:"samples_ms"`
	// Set with Match: exec to both players holding their MATCHED update.
	FirstMatch *Latency  `json:"first_match_ms,omitempty"`
	Binary     string    `json:"binary"`
	Bytes      int64     `json:"binary_bytes"`
	GOOS       string    `json:"goos"`
	GOARCH     string    `json:"goarch"`
	CPUs       int       `json:"cpus"`
	At         time.Time `json:"at"`
}

// Coldstart starts the binary opts.Runs times, each with a fresh data
// directory and the embedded NATS listening, and measures the time from exec
// to the first 200 from /readyz. Each run is stopped with SIGTERM before the
// next starts.
func Coldstart(ctx context.Context, opts ColdstartOptions) (*ColdstartResult, error) {
	if opts.Runs < 1 {
		return nil, fmt.Errorf("coldstart: runs must be at least 1")
	}
	fi, err := os.Stat(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("coldstart: %w", err)
	}
	res := &ColdstartResult{
		Scenario: "coldstart", Runs: opts.Runs, Binary: opts.Binary, Bytes: fi.Size(),
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), At: time.Now().UTC(),
	}
	client := &http.Client{Timeout: time.Second}
	var matched []float64
	for i := 0; i < opts.Runs; i++ {
		d, m, err := coldstartOnce(ctx, client, opts)
		if err != nil {
			return nil, fmt.Errorf("coldstart run %d: %w", i+1, err)
		}
		res.Samples = append(res.Samples, ms(d))
		if opts.Match {
			matched = append(matched, ms(m))
		}
	}
	res.summarise()
	if opts.Match {
		res.FirstMatch = summarise(matched)
	}
	if opts.JSONFile != "" {
		out, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(opts.JSONFile, append(out, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func coldstartOnce(ctx context.Context, client *http.Client, opts ColdstartOptions) (ready, matched time.Duration, err error) {
	dir, err := os.MkdirTemp("", "rally-coldstart-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	p, err := launch.Start(ctx, opts.Binary, []string{"serve",
		"--data-dir", dir, "--log-format", "json",
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
	}, nil)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		stopCtx, stop := context.WithTimeout(context.Background(), opts.Timeout)
		defer stop()
		_, _ = p.Stop(stopCtx)
	}()
	addrs, err := p.WaitListening(ctx)
	if err != nil {
		return 0, 0, err
	}
	url := "http://" + addrs.HTTP + "/readyz"
	// Poll: readiness is what a load balancer sees, so that is what counts.
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready = time.Since(p.Started())
				if !opts.Match {
					return ready, 0, nil
				}
				if err := firstMatch(ctx, "http://"+addrs.HTTP, addrs.GRPC); err != nil {
					return 0, 0, err
				}
				return ready, time.Since(p.Started()), nil
			}
		}
		select {
		case <-tick.C:
		case <-p.Exited():
			return 0, 0, fmt.Errorf("rally exited before ready; log:\n%s", p.Log())
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("not ready after %s; log:\n%s", opts.Timeout, p.Log())
		}
	}
}

func (r *ColdstartResult) summarise() {
	s := append([]float64(nil), r.Samples...)
	sort.Float64s(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	r.MinMS, r.MaxMS = s[0], s[len(s)-1]
	r.P50MS, r.P90MS, r.P99MS = Percentile(s, 50), Percentile(s, 90), Percentile(s, 99)
	r.MeanMS = round(sum / float64(len(s)))
}

// Percentile returns the nearest-rank percentile p (0-100] of sorted values.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// firstMatch logs two new players in and waits until both are matched.
func firstMatch(ctx context.Context, baseURL, grpcAddr string) error {
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	mc := matchv1.NewMatchServiceClient(conn)
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			sess, err := rally.AuthenticateDevice(ctx, baseURL, fmt.Sprintf("coldstart-player-%d", i), "", true)
			if err != nil {
				errs <- err
				return
			}
			sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+sess.Token)
			stream, err := mc.FindOpponent(sctx, &matchv1.TicketRequest{Queue: "duel"})
			if err != nil {
				errs <- err
				return
			}
			for {
				u, err := stream.Recv()
				if err != nil {
					errs <- fmt.Errorf("first match: %w", err)
					return
				}
				if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
					errs <- nil
					return
				}
			}
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// WriteTable prints the result for a terminal.
func (r *ColdstartResult) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "coldstart: %d runs of %s (%.1f MB), exec -> first 200 on /readyz\n",
		r.Runs, r.Binary, float64(r.Bytes)/1e6)
	fmt.Fprintf(w, "%8s %8s %8s %8s %8s %8s\n", "min", "p50", "p90", "p99", "max", "mean")
	fmt.Fprintf(w, "%6.1fms %6.1fms %6.1fms %6.1fms %6.1fms %6.1fms\n",
		r.MinMS, r.P50MS, r.P90MS, r.P99MS, r.MaxMS, r.MeanMS)
	if m := r.FirstMatch; m != nil {
		fmt.Fprintf(w, "exec -> first pair matched (two logins + FindOpponent on duel):\n")
		fmt.Fprintf(w, "%6.1fms %6.1fms %6.1fms %6.1fms %6.1fms\n", m.Min, m.P50, m.P90, m.P99, m.Max)
	}
}
