package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rallyhq/rally/internal/leaderboard"
	"github.com/rallyhq/rally/internal/store"
)

// Leaderboard backends.
const (
	LeaderboardEmbedded = "embedded"
	LeaderboardRedis    = "redis"
)

// LeaderboardOptions configures Leaderboard.
type LeaderboardOptions struct {
	Backend string
	// Records are loaded onto the board before anything is measured.
	Records int
	// RedisURL is the Redis of the redis backend; empty starts a
	// throwaway redis-server (no persistence) for the run.
	RedisURL string
	// Writers call Submit concurrently (the durable path needs many to
	// fill its group commits); Readers call Rank and Around (0: one per
	// core in process, 32 on Redis).
	Writers int
	Readers int
	// Batch is the writes per SubmitMany call of the batched phase.
	Batch int
	// Duration of each measured phase.
	Duration time.Duration
	// DataDir holds the embedded backend's store; empty is a temporary
	// directory, removed afterwards.
	DataDir  string
	JSONFile string
	// Progress receives one line per second while a phase runs.
	Progress io.Writer
}

// LeaderboardResult is what one leaderboard run measured.
type LeaderboardResult struct {
	Scenario string  `json:"scenario"`
	Backend  string  `json:"backend"`
	Records  int     `json:"records"`
	Writers  int     `json:"writers"`
	Readers  int     `json:"readers"`
	Batch    int     `json:"batch"`
	PhaseS   float64 `json:"phase_s"`
	LoadS    float64 `json:"load_s"`
	// ReloadS is a restart of the embedded backend: reading every record
	// back from the store and indexing it.
	ReloadS float64 `json:"reload_s,omitempty"`

	// SubmitsPerSec are acknowledged Service.Submit calls: durable in the
	// store (embedded) or applied by Redis.
	SubmitsPerSec        float64   `json:"submits_per_sec"`
	SubmitLatency        LatencyMS `json:"submit_latency_ms"`
	BatchedSubmitsPerSec float64   `json:"batched_submits_per_sec"`
	// MemorySubmitsPerSec is the embedded backend's in-memory structure
	// alone (index, owner map, operator, new rank), one goroutine, no
	// durability.
	MemorySubmitsPerSec float64 `json:"memory_submits_per_sec,omitempty"`
	MemoryRankP99US     float64 `json:"memory_rank_p99_us,omitempty"`

	AroundQueriesPerSec float64   `json:"around_queries_per_sec"`
	AroundLatency       LatencyMS `json:"around_latency_ms"`
	RankQueriesPerSec   float64   `json:"rank_queries_per_sec"`
	RankQueryP50MS      float64   `json:"rank_query_p50_ms"`
	RankQueryP99MS      float64   `json:"rank_query_p99_ms"`
	RankQueryMaxMS      float64   `json:"rank_query_max_ms"`

	// The ceiling: redis-benchmark's own ZADD on the same Redis, pipelined
	// 16 deep and not pipelined (50 connections each).
	RedisZaddPerSec            float64 `json:"redis_zadd_per_sec,omitempty"`
	RedisZaddUnpipelinedPerSec float64 `json:"redis_zadd_unpipelined_per_sec,omitempty"`
	RedisBenchmarkError        string  `json:"redis_benchmark_error,omitempty"`
	RedisServer                string  `json:"redis_server,omitempty"`
	// RedisCPUSubmit is the Redis server's CPU (INFO cpu) during the
	// submit phase, in cores.
	RedisCPUSubmit float64 `json:"redis_cpu_cores_submit,omitempty"`

	Errors      int64    `json:"errors"`
	ErrorSample []string `json:"error_samples,omitempty"`
	// HeapMB is the live heap after the phases (after a collection).
	HeapMB      float64  `json:"heap_mb"`
	RSSMB       float64  `json:"rss_mb"`
	CPU         float64  `json:"cpu_cores"`
	Definitions []string `json:"definitions"`

	GOOS   string    `json:"goos"`
	GOARCH string    `json:"goarch"`
	CPUs   int       `json:"cpus"`
	At     time.Time `json:"at"`
}

var leaderboardDefinitions = []string{
	"every phase runs in this process against the leaderboard Service (validation, periods, metrics, spans) " +
		"over the chosen backend, on one board of `records` records with random 40-bit scores, operator set, " +
		"so every write moves its record",
	"submits_per_sec: Submit calls acknowledged per second by `writers` goroutines (embedded: each one durable " +
		"in the bbolt store, group-committed); batched_submits_per_sec: writes per second in SubmitMany calls of " +
		"`batch` writes (one transaction or one Lua call each)",
	"memory_submits_per_sec: the embedded backend's in-memory structure alone on one goroutine, with no " +
		"durability: owner lookup, operator, order-statistic index update and the new rank",
	"around_queries_per_sec / rank_queries_per_sec: Around (10 records) and Rank calls per second by " +
		"`readers` goroutines, writers idle; rank_query_*_ms: their latency percentiles",
	"redis_zadd_per_sec: redis-benchmark -t zadd -P 16 -c 50 against the same Redis (the ceiling); " +
		"redis_zadd_unpipelined_per_sec: the same with -P 1",
}

type lbRun struct {
	opts   LeaderboardOptions
	svc    *leaderboard.Service
	errs   atomic.Int64
	errMu  sync.Mutex
	sample []string
}

func (r *lbRun) fail(err error) {
	r.errs.Add(1)
	r.errMu.Lock()
	if len(r.sample) < 5 {
		r.sample = append(r.sample, err.Error())
	}
	r.errMu.Unlock()
}

func (o *LeaderboardOptions) validate() error {
	if o.Backend == "" {
		o.Backend = LeaderboardEmbedded
	}
	if o.Backend != LeaderboardEmbedded && o.Backend != LeaderboardRedis {
		return fmt.Errorf("leaderboard: --backend %q is not one of embedded, redis", o.Backend)
	}
	if o.Records < 1 {
		return errors.New("leaderboard: need at least one record")
	}
	if o.Readers <= 0 {
		// In-process reads are CPU-bound: more readers than cores only
		// queue. Redis reads wait on round trips: keep several in flight.
		o.Readers = runtime.GOMAXPROCS(0)
		if o.Backend == LeaderboardRedis {
			o.Readers = 32
		}
	}
	o.Writers, o.Batch = max(o.Writers, 1), max(o.Batch, 1)
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	return nil
}

// Leaderboard loads one board with opts.Records records and measures, in
// turn: durable submits, batched submits, Around and Rank queries, and (for
// the embedded backend) the in-memory structure alone; for Redis also
// redis-benchmark's own ZADD as the ceiling.
func Leaderboard(ctx context.Context, opts LeaderboardOptions) (*LeaderboardResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	res := &LeaderboardResult{
		Scenario: "leaderboard", Backend: opts.Backend, Records: opts.Records, Writers: opts.Writers,
		Readers: opts.Readers, Batch: opts.Batch, PhaseS: opts.Duration.Seconds(), Definitions: leaderboardDefinitions,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), At: time.Now().UTC(),
	}
	be, reopen, redisAddr, cleanup, err := lbBackend(ctx, &opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	svc, err := leaderboard.New(ctx, leaderboard.Options{Backend: be, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if _, err := svc.CreateBoard(ctx, leaderboard.Board{ID: "bench", Operator: leaderboard.OpSet}); err != nil {
		return nil, err
	}
	r := &lbRun{opts: opts, svc: svc}
	cpu0, wall0 := selfCPU(), time.Now()

	t0 := time.Now()
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	res.LoadS = round(time.Since(t0).Seconds())

	var redis0 float64
	var redisErr error
	if opts.Backend == LeaderboardRedis {
		redis0, redisErr = redisCPU(ctx, opts.RedisURL)
	}
	t0 = time.Now()
	n, lat, err := r.phase(ctx, "submit", opts.Writers, func(rng *mrand.Rand) error {
		_, err := svc.Submit(ctx, "bench", leaderboard.Write{Owner: lbOwner(rng.IntN(opts.Records)), Score: rng.Int64N(1 << 40)})
		return err
	})
	if err != nil {
		return nil, err
	}
	res.SubmitsPerSec, res.SubmitLatency = n, lat
	if opts.Backend == LeaderboardRedis && redisErr == nil {
		var redis1 float64
		if redis1, redisErr = redisCPU(ctx, opts.RedisURL); redisErr == nil {
			res.RedisCPUSubmit = round((redis1 - redis0) / time.Since(t0).Seconds())
		}
	}
	n, _, err = r.phase(ctx, "batched submit", opts.Writers, func(rng *mrand.Rand) error {
		ws := make([]leaderboard.Write, opts.Batch)
		for i := range ws {
			ws[i] = leaderboard.Write{Owner: lbOwner(rng.IntN(opts.Records)), Score: rng.Int64N(1 << 40)}
		}
		_, err := svc.SubmitMany(ctx, "bench", ws)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.BatchedSubmitsPerSec = round(n * float64(opts.Batch))
	n, lat, err = r.phase(ctx, "around", opts.Readers, func(rng *mrand.Rand) error {
		recs, _, err := svc.Around(ctx, "bench", "", lbOwner(rng.IntN(opts.Records)), 10)
		if err == nil && len(recs) != min(10, opts.Records) {
			err = fmt.Errorf("around returned %d records", len(recs))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	res.AroundQueriesPerSec, res.AroundLatency = n, lat
	n, lat, err = r.phase(ctx, "rank", opts.Readers, func(rng *mrand.Rand) error {
		_, _, err := svc.Rank(ctx, "bench", "", lbOwner(rng.IntN(opts.Records)))
		return err
	})
	if err != nil {
		return nil, err
	}
	res.RankQueriesPerSec, res.RankQueryP50MS, res.RankQueryP99MS, res.RankQueryMaxMS = n, lat.P50, lat.P99, lat.Max
	if wall := time.Since(wall0).Seconds(); wall > 0 {
		res.CPU = round((selfCPU() - cpu0).Seconds() / wall)
	}
	var mem runtime.MemStats
	runtime.GC() // live heap: the records, not the garbage of the phases
	runtime.ReadMemStats(&mem)
	res.HeapMB, res.RSSMB = round(float64(mem.HeapAlloc)/(1<<20)), lbRSSMB()

	if opts.Backend == LeaderboardEmbedded {
		if err := svc.Close(); err != nil {
			return nil, err
		}
		// A restart: a new backend on the same store loads the board.
		r.progressf("reload: loading %d records from the store\n", opts.Records)
		t0 := time.Now()
		again, err := leaderboard.New(ctx, leaderboard.Options{Backend: reopen(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return nil, err
		}
		if n, err := again.Count(ctx, "bench", ""); err != nil || n != int64(opts.Records) {
			return nil, fmt.Errorf("leaderboard: reloaded %d records of %d (%v)", n, opts.Records, err)
		}
		res.ReloadS = round(time.Since(t0).Seconds())
		_ = again.Close()
		r.memory(ctx, res)
	} else {
		res.RedisServer = redisAddr
		res.RedisZaddPerSec, res.RedisZaddUnpipelinedPerSec, err = redisBenchmarkZadd(ctx, redisAddr, opts.Progress)
		if err != nil {
			res.RedisBenchmarkError = err.Error()
		}
	}
	res.Errors = r.errs.Load()
	res.ErrorSample = r.sample
	if opts.JSONFile != "" {
		out, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(opts.JSONFile, append(out, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func lbOwner(i int) string { return "player-" + strconv.Itoa(i) }

func (r *lbRun) progressf(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format, args...)
	}
}

// load writes every record in batches of 1000 from a few goroutines.
func (r *lbRun) load(ctx context.Context) error {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.progressf("load: %d of %d records\n", done.Load(), r.opts.Records)
			}
		}
	}()
	for range 4 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(mrand.Uint64(), 1))
			ws := make([]leaderboard.Write, 0, 1000)
			for ctx.Err() == nil {
				from := int(next.Add(1000)) - 1000
				if from >= r.opts.Records {
					return
				}
				ws = ws[:0]
				for i := from; i < min(from+1000, r.opts.Records); i++ {
					ws = append(ws, leaderboard.Write{Owner: lbOwner(i), Score: rng.Int64N(1 << 40)})
				}
				if _, err := r.svc.SubmitMany(ctx, "bench", ws); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(int64(len(ws)))
			}
		})
	}
	wg.Wait()
	close(stop)
	if firstErr != nil {
		return fmt.Errorf("leaderboard: loading records: %w", firstErr)
	}
	if n, err := r.svc.Count(ctx, "bench", ""); err != nil || n != int64(r.opts.Records) {
		return fmt.Errorf("leaderboard: loaded %d records of %d (%v)", n, r.opts.Records, err)
	}
	return ctx.Err()
}

// phase runs op from workers goroutines for the phase's duration and
// returns operations per second and their latency.
func (r *lbRun) phase(ctx context.Context, name string, workers int, op func(*mrand.Rand) error) (float64, LatencyMS, error) {
	var count atomic.Int64
	samplers := make([]*sampler, workers)
	start := time.Now()
	end := start.Add(r.opts.Duration)
	var wg sync.WaitGroup
	for w := range workers {
		samplers[w] = newSampler(50_000, 1024)
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(len(name))))
			s := samplers[w]
			for ctx.Err() == nil {
				t := time.Now()
				if !t.Before(end) {
					return
				}
				if err := op(rng); err != nil {
					r.fail(err)
					continue
				}
				s.add(int64(time.Since(t)))
				count.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				c := count.Load()
				r.progressf("%s: %.0fs %.0f/s\n", name, now.Sub(start).Seconds(), float64(c-last)/now.Sub(lastAt).Seconds())
				last, lastAt = c, now
			}
		}
	}()
	wg.Wait()
	close(done)
	if err := ctx.Err(); err != nil {
		return 0, LatencyMS{}, err
	}
	elapsed := time.Since(start).Seconds()
	stride := int64(1)
	var maxNS int64
	for _, s := range samplers {
		stride = max(stride, s.stride)
		maxNS = max(maxNS, s.max)
	}
	var all []int64
	for _, s := range samplers {
		all = append(all, s.thinTo(stride)...)
	}
	p := nsPercentilesMS(all, 50, 90, 99)
	return round(float64(count.Load()) / elapsed), LatencyMS{P50: p[0], P90: p[1], P99: p[2], Max: round(float64(maxNS) / 1e6)}, nil
}

// memory measures the embedded backend's in-memory structure alone.
func (r *lbRun) memory(ctx context.Context, res *LeaderboardResult) {
	m := leaderboard.NewMemoryBoard(leaderboard.Desc)
	rng := mrand.New(mrand.NewPCG(9, 9))
	now := time.Now()
	for i := range r.opts.Records {
		m.Submit(leaderboard.Write{Owner: lbOwner(i), Score: rng.Int64N(1 << 40), Operator: leaderboard.OpSet}, now)
	}
	owners := make([]string, 1<<14)
	for i := range owners {
		owners[i] = lbOwner(rng.IntN(r.opts.Records))
	}
	n, start := 0, time.Now()
	end := start.Add(r.opts.Duration)
	for ; ctx.Err() == nil; n++ {
		if n&1023 == 0 && !time.Now().Before(end) {
			break
		}
		m.Submit(leaderboard.Write{Owner: owners[n&(len(owners)-1)], Score: rng.Int64N(1 << 40), Operator: leaderboard.OpSet}, now)
	}
	res.MemorySubmitsPerSec = round(float64(n) / time.Since(start).Seconds())
	s := newSampler(100_000, 100_000)
	for i := 0; i < 200_000 && ctx.Err() == nil; i++ {
		t := time.Now()
		m.Rank(owners[i&(len(owners)-1)])
		s.add(int64(time.Since(t)))
	}
	res.MemoryRankP99US = round(nsPercentilesMS(s.kept, 99)[0] * 1000)
	r.progressf("memory: %.0f submits/s, rank p99 %.1f µs\n", res.MemorySubmitsPerSec, res.MemoryRankP99US)
}

// lbBackend opens the backend; cleanup releases it (and a started Redis).
// For the embedded backend, reopen returns a fresh backend on the same
// store, as a restart would.
func lbBackend(ctx context.Context, opts *LeaderboardOptions) (be leaderboard.Backend, reopen func() leaderboard.Backend, redisAddr string, cleanup func(), err error) {
	if opts.Backend == LeaderboardEmbedded {
		dir, remove := opts.DataDir, func() {}
		if dir == "" {
			d, err := os.MkdirTemp("", "rally-bench-leaderboard-")
			if err != nil {
				return nil, nil, "", nil, err
			}
			dir, remove = d, func() { _ = os.RemoveAll(d) }
		}
		st, err := store.OpenBolt(filepath.Join(dir, "rally.db"))
		if err != nil {
			remove()
			return nil, nil, "", nil, err
		}
		var opened []*leaderboard.Embedded
		reopen := func() leaderboard.Backend {
			e := leaderboard.NewEmbedded(st, leaderboard.EmbeddedOptions{})
			opened = append(opened, e)
			return e
		}
		be := reopen()
		return be, reopen, "", func() {
			for _, e := range opened {
				_ = e.Close()
			}
			_ = st.Close()
			remove()
		}, nil
	}
	addr, stopRedis := "", func() {}
	if opts.RedisURL == "" {
		a, stop, err := startRedisServer(ctx)
		if err != nil {
			return nil, nil, "", nil, err
		}
		addr, stopRedis = a, stop
		opts.RedisURL = "redis://" + a + "/0"
	}
	ropts, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		stopRedis()
		return nil, nil, "", nil, fmt.Errorf("leaderboard: --redis-url: %w", err)
	}
	addr = ropts.Addr
	ropts.PoolSize = opts.Writers + opts.Readers + 8
	client := redis.NewClient(ropts)
	var id [4]byte
	_, _ = rand.Read(id[:])
	prefix := "rally:bench:" + hex.EncodeToString(id[:]) + ":"
	cleanup = func() {
		// Leave a shared Redis as it was: drop this run's keys.
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		iter := client.Scan(c, 0, prefix+"*", 1000).Iterator()
		for iter.Next(c) {
			client.Unlink(c, iter.Val())
		}
		_ = client.Close()
		stopRedis()
	}
	if err := client.Ping(ctx).Err(); err != nil {
		cleanup()
		return nil, nil, "", nil, fmt.Errorf("leaderboard: redis at %s: %w", addr, err)
	}
	return leaderboard.NewRedis(client, prefix), nil, addr, cleanup, nil
}

// startRedisServer starts a throwaway redis-server without persistence on
// a free loopback port.
func startRedisServer(ctx context.Context) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New("leaderboard: redis-server not found: install it or pass --redis-url")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir, err := os.MkdirTemp("", "rally-bench-redis-")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "")
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = os.RemoveAll(dir) }
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(ctx).Err(); err == nil {
			return addr, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("leaderboard: redis-server on %s did not answer", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var zaddRate = regexp.MustCompile(`ZADD: ([0-9.]+) requests per second`)

// redisBenchmarkZadd runs redis-benchmark's own ZADD test pipelined and
// not, the ceiling for the Redis backend.
func redisBenchmarkZadd(ctx context.Context, addr string, progress io.Writer) (pipelined, unpipelined float64, err error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return 0, 0, errors.New("redis-benchmark not found (it ships with redis-server)")
	}
	host, port, _ := net.SplitHostPort(addr)
	run := func(pipeline, n string) (float64, error) {
		out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-t", "zadd", "-n", n, "-c", "50",
			"-P", pipeline, "-r", "1000000", "-q").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("redis-benchmark: %v: %s", err, strings.TrimSpace(string(out)))
		}
		// -q prints progress with carriage returns; the figure is last.
		m := zaddRate.FindAllSubmatch(out, -1)
		if len(m) == 0 {
			return 0, fmt.Errorf("redis-benchmark said %q", strings.TrimSpace(string(out)))
		}
		return strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	}
	if pipelined, err = run("16", "2000000"); err != nil {
		return 0, 0, err
	}
	if unpipelined, err = run("1", "300000"); err != nil {
		return pipelined, 0, err
	}
	if progress != nil {
		fmt.Fprintf(progress, "redis-benchmark ZADD: %.0f/s pipelined 16, %.0f/s not pipelined\n", pipelined, unpipelined)
	}
	return pipelined, unpipelined, nil
}

func lbRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return round(kb / 1024)
		}
	}
	return 0
}

// WriteTable prints the result for a terminal.
func (r *LeaderboardResult) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "leaderboard: %s backend, %d records (loaded in %.1fs), %d writers, %d readers, %gs per phase\n",
		r.Backend, r.Records, r.LoadS, r.Writers, r.Readers, r.PhaseS)
	fmt.Fprintf(w, "%14s %14s %12s %12s %12s %12s %12s\n",
		"submits", "batched", "submit p99", "around", "rank", "rank p50", "rank p99")
	fmt.Fprintf(w, "%12.0f/s %12.0f/s %10.2fms %10.0f/s %10.0f/s %10.3fms %10.3fms\n",
		r.SubmitsPerSec, r.BatchedSubmitsPerSec, r.SubmitLatency.P99, r.AroundQueriesPerSec, r.RankQueriesPerSec,
		r.RankQueryP50MS, r.RankQueryP99MS)
	if r.ReloadS > 0 {
		fmt.Fprintf(w, "restart: %d records read back from the store and indexed in %.1fs\n", r.Records, r.ReloadS)
	}
	if r.MemorySubmitsPerSec > 0 {
		fmt.Fprintf(w, "in-memory structure alone: %.0f submits/s on one goroutine, rank p99 %.1f µs\n",
			r.MemorySubmitsPerSec, r.MemoryRankP99US)
	}
	if r.RedisZaddPerSec > 0 {
		fmt.Fprintf(w, "redis-benchmark ZADD on the same Redis: %.0f/s pipelined (16), %.0f/s not pipelined; Redis CPU during submits %.2f cores\n",
			r.RedisZaddPerSec, r.RedisZaddUnpipelinedPerSec, r.RedisCPUSubmit)
	}
	if r.RedisBenchmarkError != "" {
		fmt.Fprintf(w, "redis-benchmark: %s\n", r.RedisBenchmarkError)
	}
	fmt.Fprintf(w, "process: %.2f cores, heap %.0f MB, rss %.0f MB\n", r.CPU, r.HeapMB, r.RSSMB)
	writeProblems(w, r.Errors, map[string]int64{"operation": r.Errors}, r.ErrorSample, "")
}
