package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	"github.com/rallyhq/rally/internal/launch"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// Match stores.
const (
	MatchStoreMemory = "memory"
	MatchStoreRedis  = "redis"
)

// MatchOptions configures Match.
type MatchOptions struct {
	// Target is the HTTP host:port of a running server, or several
	// comma-separated (replicas); GRPCTarget then lists their gRPC
	// addresses in the same order. Empty starts Binary: one server, or
	// Replicas servers sharing the Redis pool at RedisURL.
	Target     string
	GRPCTarget string
	Binary     string

	// Clients is how many FindOpponent streams are kept open at once.
	Clients int
	// Players is the number of distinct accounts (at least Clients); each
	// has at most one open ticket at a time.
	Players int
	// Rate is the target of new tickets per second over all clients; 0
	// lets every client start its next ticket as soon as the last ends.
	Rate     float64
	Queue    string
	Duration time.Duration
	// Warmup runs the load before the measured window; it is not counted.
	Warmup time.Duration
	// ConnectConcurrency bounds concurrent logins.
	ConnectConcurrency int
	// GRPCConns spreads the streams over this many gRPC connections (in
	// all, at least one per server).
	GRPCConns int
	Seed      uint64
	// RedisURL, with a started server, runs Replicas servers on one Redis
	// pool; with Target it only labels the result's store.
	RedisURL string
	Replicas int
	JSONFile string
	// Progress receives one line per second while the load runs (nil: none).
	Progress io.Writer
}

// MatchReplica is one server's share of the run.
type MatchReplica struct {
	HTTP    string  `json:"http,omitempty"`
	CPU     float64 `json:"cpu_cores"`
	RSSMB   float64 `json:"rss_mb"`
	Matches float64 `json:"matches"`
	// PassMS are bucket bounds of rally_match_pass_seconds; PassMeanMS is
	// exact (its sum over its count), and stays meaningful past the last
	// bucket.
	PassMS     PauseMS `json:"pass_ms"`
	PassMeanMS float64 `json:"pass_mean_ms"`
	Passes     uint64  `json:"passes"`
	// Every match opens a room; these show what the open rooms cost.
	RoomsOpen       float64 `json:"rooms_open"`
	RoomTicksPerSec float64 `json:"room_ticks_per_sec"`
	MetricsError    string  `json:"metrics_error,omitempty"`
}

// SpreadStats holds rating-spread percentiles in mu points.
type SpreadStats struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// MatchResult is what one matchmaking load run measured.
type MatchResult struct {
	Scenario   string  `json:"scenario"`
	Queue      string  `json:"queue"`
	Clients    int     `json:"clients"`
	Players    int     `json:"players"`
	Replicas   int     `json:"replicas"`
	Store      string  `json:"store"`
	GRPCConns  int     `json:"grpc_conns"`
	TargetRate float64 `json:"target_tickets_per_sec"`
	Seed       uint64  `json:"seed"`
	DurationS  float64 `json:"duration_s"`
	WarmupS    float64 `json:"warmup_s"`
	// SetupS is logging every player in and connecting gRPC; ServerStartS
	// is starting the servers, when the bench does.
	SetupS       float64 `json:"setup_s"`
	ServerStartS float64 `json:"server_start_s,omitempty"`

	TicketsSent          int64       `json:"tickets_sent"`
	TicketsSentPerSec    float64     `json:"tickets_sent_per_sec"`
	TicketsMatched       int64       `json:"tickets_matched"`
	TicketsMatchedPerSec float64     `json:"tickets_matched_per_sec"`
	Matches              int         `json:"matches"`
	MatchesPerSec        float64     `json:"matches_per_sec"`
	TimeToMatch          LatencyMS   `json:"time_to_match_ms"`
	TimeToQueued         LatencyMS   `json:"time_to_queued_ms"`
	RatingSpread         SpreadStats `json:"rating_spread"`
	DoubleAssignments    int64       `json:"double_assignments"`
	Inconsistent         int64       `json:"inconsistent_outcomes"`
	DoubleSample         []string    `json:"double_assignment_samples,omitempty"`
	Expired              int64       `json:"expired"`
	Cancelled            int64       `json:"cancelled"`
	Unmatched            int64       `json:"unmatched"`
	Widened              int64       `json:"widened"`
	Definitions          []string    `json:"definitions"`

	ServerCPU   float64        `json:"server_cpu_cores"`
	ServerRSSMB float64        `json:"server_rss_mb"`
	PerReplica  []MatchReplica `json:"per_replica"`
	LoadgenCPU  float64        `json:"loadgen_cpu_cores"`
	// RedisCPU is the shared Redis's own CPU (INFO cpu) over the window.
	RedisCPU      float64            `json:"redis_cpu_cores,omitempty"`
	MachineCPU    float64            `json:"machine_cpu_cores,omitempty"`
	MetricsError  string             `json:"metrics_error,omitempty"`
	ServerCounter map[string]float64 `json:"server_counters"`

	Errors      int64            `json:"errors"`
	ErrorKinds  map[string]int64 `json:"error_kinds"`
	ErrorSample []string         `json:"error_samples,omitempty"`

	Server    string    `json:"server"`
	Binary    string    `json:"binary,omitempty"`
	ServerEnv []string  `json:"server_env,omitempty"`
	GOOS      string    `json:"goos"`
	GOARCH    string    `json:"goarch"`
	CPUs      int       `json:"cpus"`
	At        time.Time `json:"at"`
}

var matchDefinitions = []string{
	"tickets_matched_per_sec: MATCHED updates received inside the measured window, divided by its length",
	"time_to_match_ms: for each MATCHED received inside the window, its receive time minus the time the " +
		"FindOpponent request was sent; time_to_queued_ms likewise for QUEUED, over tickets sent inside the window",
	"rating_spread: per match first seen inside the window (grouped by assignment.match_id), the highest minus " +
		"the lowest ticket mu of its players",
	"double_assignments: a ticket id matched into two match ids; a match id announced with different teams; " +
		"a player listed in a match (first seen inside the window) that none of the player's own tickets was " +
		"matched into, while the ticket open at that moment (one per player at a time) was matched into another",
	"inconsistent_outcomes: a player listed in such a match whose open ticket instead expired, was cancelled, " +
		"or saw no outcome before the load stopped (a second after the window)",
	"unmatched: tickets sent inside the window without a match when the load stopped (a second after the " +
		"window: still waiting, expired, cancelled or failed); expired and cancelled count tickets that ended so " +
		"inside the window",
}

// Error kinds counted in MatchResult.ErrorKinds.
const (
	mErrLogin  = "login"
	mErrConn   = "grpc_connect"
	mErrOpen   = "open"
	mErrStream = "stream"
	mErrUpdate = "unexpected_update"
	mErrEOF    = "ended_without_outcome"
)

var matchErrKinds = [...]string{mErrLogin, mErrConn, mErrOpen, mErrStream, mErrUpdate, mErrEOF}

// Outcomes of a ticket as the load generator saw it.
const (
	outOpen uint8 = iota // still waiting when the load stopped
	outMatched
	outExpired
	outCancelled
	outError
)

// ticketRec is one ticket's life; a second MATCHED on one stream adds a
// second record with the same id.
type ticketRec struct {
	id     string
	match  string
	users  []string // the match's players, from the assignment's teams
	player int32
	out    uint8
	again  bool  // a second MATCHED on the stream, kept for the assignment check
	sent   int64 // unix ns
	queued int64
	ended  int64
}

// matchPlayer is one account and the ticket it sends.
type matchPlayer struct {
	device  string
	mu      float64
	regions map[string]uint32
	userID  string
	ctx     context.Context // carries the bearer token
	req     *matchv1.TicketRequest
}

// matchClient is one stream slot: it runs one ticket after another.
type matchClient struct {
	mc   matchv1.MatchServiceClient
	recs []ticketRec // the client's goroutine only, until it ends

	sent, matched, widened atomic.Int64

	mu   sync.Mutex // guards hist, read by the progress printer
	hist logHist
}

type matchRun struct {
	opts    MatchOptions
	players []matchPlayer
	byUser  map[string]int
	free    chan int
	pace    *pacer
	open    atomic.Int64
	closing atomic.Bool

	errs     [len(matchErrKinds)]atomic.Int64
	errMu    sync.Mutex
	errShown []string
}

func (r *matchRun) fail(kind, msg string) {
	for i, k := range matchErrKinds {
		if k == kind {
			r.errs[i].Add(1)
		}
	}
	r.errMu.Lock()
	if len(r.errShown) < 10 {
		r.errShown = append(r.errShown, kind+": "+msg)
	}
	r.errMu.Unlock()
}

// Match runs the matchmaking load: opts.Clients FindOpponent streams kept
// open against one server or several sharing a Redis pool, each client
// sending a fresh ticket as soon as its last one ended (or at the paced
// rate), and measures match throughput, time to match, rating spread,
// double assignments and the servers' resources.
func Match(ctx context.Context, opts MatchOptions) (*MatchResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	res := &MatchResult{
		Scenario: "match", Queue: opts.Queue, Clients: opts.Clients, Players: opts.Players, Replicas: opts.Replicas,
		Store: MatchStoreMemory, TargetRate: opts.Rate, Seed: opts.Seed,
		DurationS: opts.Duration.Seconds(), WarmupS: opts.Warmup.Seconds(), Definitions: matchDefinitions,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), At: time.Now().UTC(),
	}
	if opts.RedisURL != "" {
		res.Store = MatchStoreRedis
	}

	var servers []launch.Addrs
	if opts.Target != "" {
		https, grpcs := splitList(opts.Target), splitList(opts.GRPCTarget)
		for i := range https {
			servers = append(servers, launch.Addrs{HTTP: strings.TrimPrefix(https[i], "http://"), GRPC: grpcs[i]})
		}
		res.Server = strings.Join(https, ",")
	} else {
		env := matchServerEnv(opts)
		res.Server, res.Binary, res.ServerEnv = "started by the bench", filepath.Base(opts.Binary), redactEnv(env)
		t0 := time.Now()
		var cleanup func()
		var err error
		servers, cleanup, err = startMatchServers(ctx, opts.Binary, opts.Replicas, env)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		res.ServerStartS = round(time.Since(t0).Seconds())
	}
	res.Replicas = len(servers)

	// Streams end when the load does; logins and dials use ctx.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	r := &matchRun{opts: opts, players: matchPlayers(opts.Players, opts.Seed), byUser: map[string]int{}}
	if opts.Rate > 0 {
		r.pace = newPacer(opts.Rate)
	}

	setup := time.Now()
	if err := r.login(ctx, loadCtx, servers); err != nil {
		return nil, err
	}
	conns, err := r.dial(ctx, servers)
	defer func() {
		for _, cs := range conns {
			for _, c := range cs {
				_ = c.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	res.GRPCConns = len(conns) * len(conns[0])
	res.SetupS = round(time.Since(setup).Seconds())

	clients := make([]*matchClient, opts.Clients)
	for i := range clients {
		// Round robin over servers, then over that server's connections.
		cs := conns[i%len(conns)]
		clients[i] = &matchClient{mc: matchv1.NewMatchServiceClient(cs[(i/len(conns))%len(cs)])}
	}

	start := time.Now().Add(100 * time.Millisecond)
	winStart := start.Add(opts.Warmup)
	winEnd := winStart.Add(opts.Duration)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sleepUntil(loadCtx, start) == nil {
				r.clientLoop(loadCtx, c)
			}
		}()
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Add(1)
	go func() { defer progressWG.Done(); r.progress(clients, start, winStart, winEnd, progressDone) }()

	httpc := &http.Client{Timeout: 5 * time.Second}
	var before, after []*scrape
	var beforeErr, afterErr []error
	var ruBefore, ruAfter time.Duration
	var wallBefore, wallAfter time.Time
	var machBefore, machAfter [2]uint64
	var redisBefore, redisAfter float64
	var redisErr error
	if err := sleepUntil(ctx, winStart); err == nil {
		before, beforeErr = scrapeAll(ctx, httpc, servers)
		ruBefore, wallBefore, machBefore = selfCPU(), time.Now(), machineCPU()
		if opts.RedisURL != "" {
			redisBefore, redisErr = redisCPU(ctx, opts.RedisURL)
		}
	}
	if err := sleepUntil(ctx, winEnd); err == nil {
		ruAfter, wallAfter, machAfter = selfCPU(), time.Now(), machineCPU()
		after, afterErr = scrapeAll(ctx, httpc, servers)
		if opts.RedisURL != "" && redisErr == nil {
			redisAfter, redisErr = redisCPU(ctx, opts.RedisURL)
		}
	}
	// Let matches made at the window's end reach every player of them.
	_ = sleepUntil(ctx, winEnd.Add(time.Second))
	r.closing.Store(true)
	stopLoad()
	wg.Wait()
	close(progressDone)
	progressWG.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r.summarise(res, clients, winStart.UnixNano(), winEnd.UnixNano())
	if wall := wallAfter.Sub(wallBefore).Seconds(); wall > 0 {
		res.LoadgenCPU = round((ruAfter - ruBefore).Seconds() / wall)
		if opts.RedisURL != "" && redisErr == nil {
			res.RedisCPU = round((redisAfter - redisBefore) / wall)
		}
	}
	if total := machAfter[1] - machBefore[1]; machBefore[1] != 0 && total > 0 {
		res.MachineCPU = round(float64(machAfter[0]-machBefore[0]) / float64(total) * float64(runtime.NumCPU()))
	}
	matchServerFigures(res, servers, opts.Target != "", before, after, beforeErr, afterErr)
	if redisErr != nil && res.MetricsError == "" {
		res.MetricsError = "redis INFO cpu: " + redisErr.Error()
	}
	if opts.JSONFile != "" {
		out, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(opts.JSONFile, append(out, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.TrimRight(p, "/"))
		}
	}
	return out
}

func (o *MatchOptions) validate() error {
	if o.Players == 0 {
		o.Players = o.Clients
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Queue == "" {
		o.Queue = "duel"
	}
	if o.GRPCConns < 1 {
		o.GRPCConns = 1
	}
	if o.ConnectConcurrency < 1 {
		o.ConnectConcurrency = 1
	}
	if o.Target != "" {
		n, g := len(splitList(o.Target)), len(splitList(o.GRPCTarget))
		if g != n {
			return fmt.Errorf("match: --grpc-target must list one gRPC address per --target (%d, got %d)", n, g)
		}
		o.Replicas = n
	}
	switch {
	case o.Target == "" && o.Binary == "":
		return errors.New("match: need a target or a binary to start")
	case o.Clients < 2:
		return errors.New("match: need at least 2 clients")
	case o.Players < o.Clients:
		// One open ticket per player keeps double assignments detectable.
		return fmt.Errorf("match: players (%d) must be at least clients (%d)", o.Players, o.Clients)
	case o.Rate < 0:
		return errors.New("match: rate must not be negative")
	case o.Duration <= 0 || o.Warmup < 0:
		return errors.New("match: duration must be positive and warmup not negative")
	case o.Replicas < 1:
		return errors.New("match: replicas must be at least 1")
	case o.Target == "" && o.Replicas > 1 && o.RedisURL == "":
		return errors.New("match: several replicas need --redis to share one pool")
	case o.RedisURL != "" && !strings.HasPrefix(o.RedisURL, "redis://") && !strings.HasPrefix(o.RedisURL, "rediss://"):
		return errors.New("match: --redis wants redis://host:port/db")
	}
	return nil
}

// matchServerEnv selects the pool; replicas share a signing key so a
// session from one is accepted by all.
func matchServerEnv(o MatchOptions) []string {
	if o.RedisURL == "" {
		return nil
	}
	env := []string{"RALLY_MATCH_STORE=redis", "RALLY_MATCH_REDIS_URL=" + o.RedisURL}
	if o.Replicas > 1 {
		var key [32]byte
		_, _ = rand.Read(key[:])
		env = append(env, "RALLY_AUTH_SIGNING_KEY="+hex.EncodeToString(key[:]))
	}
	return env
}

// redactEnv keeps the signing key out of results.
func redactEnv(env []string) []string {
	out := make([]string, len(env))
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == "RALLY_AUTH_SIGNING_KEY" {
			e = k + "=(random, shared by the replicas)"
		}
		out[i] = e
	}
	return out
}

// startMatchServers starts n servers, each with its own data directory and
// free loopback ports, sharing the first one's NATS when there are several;
// cleanup stops them and removes the directories. A
// server that exits before it is ready fails the run with its last log
// line (such as a refused configuration).
func startMatchServers(ctx context.Context, binary string, n int, env []string) ([]launch.Addrs, func(), error) {
	var procs []*launch.Process
	var dirs []string
	stop := func(p *launch.Process) {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = p.Stop(stopCtx)
	}
	cleanup := func() {
		// The first replica, which holds the shared NATS, stops last.
		var wg sync.WaitGroup
		for _, p := range procs[min(1, len(procs)):] {
			wg.Add(1)
			go func() { defer wg.Done(); stop(p) }()
		}
		wg.Wait()
		if len(procs) > 0 {
			stop(procs[0])
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	addrs := make([]launch.Addrs, n)
	for i := range n {
		dir, err := os.MkdirTemp("", "rally-match-")
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		dirs = append(dirs, dir)
		args := []string{"serve", "--data-dir", dir, "--log-format", "json",
			"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}
		switch {
		case n == 1:
			args = append(args, "--nats-addr", "off")
		case i == 0:
			// Ticket updates cross replicas over NATS: the first replica's
			// embedded server listens, the others connect to it.
			args = append(args, "--nats-addr", "127.0.0.1:0")
		default:
			args = append(args, "--nats-url", "nats://"+addrs[0].NATS)
		}
		p, err := launch.Start(ctx, binary, args, env)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		procs = append(procs, p)
		readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		addrs[i], err = p.WaitReady(readyCtx)
		cancel()
		if err != nil {
			line := lastLogLine(p.Log())
			cleanup()
			if line == "" {
				return nil, nil, fmt.Errorf("match: server %d did not start: %w", i, err)
			}
			return nil, nil, fmt.Errorf("match: server %d did not start: %s", i, line)
		}
	}
	return addrs, cleanup, nil
}

// lastLogLine picks the line that says why a server stopped: the last error
// record or the command's own error line, else the last line.
func lastLogLine(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		var rec map[string]any
		if strings.HasPrefix(l, "rally: ") || json.Unmarshal([]byte(l), &rec) == nil && rec["level"] == "ERROR" {
			return l
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// Regions players measure latency to, with typical round trips between
// them; a player's home region is where most players live.
var (
	matchRegions     = []string{"eu", "us-east", "us-west", "asia", "sa"}
	matchHomeWeights = []float64{0.35, 0.25, 0.15, 0.15, 0.10}
	matchRegionRTT   = [5][5]float64{
		{0, 85, 150, 230, 200},
		{85, 0, 70, 210, 130},
		{150, 70, 0, 150, 180},
		{230, 210, 150, 0, 250},
		{200, 130, 180, 250, 0},
	}
)

// matchPlayers draws each player's rating and region latencies from seed:
// mu from N(1500, 300) clipped to [300, 2700]; a home region at 10-60 ms
// and the 2-4 nearest others at 80-250 ms.
func matchPlayers(n int, seed uint64) []matchPlayer {
	rng := mrand.New(mrand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	out := make([]matchPlayer, n)
	for i := range out {
		p := &out[i]
		p.device = "bench-match-" + strconv.Itoa(i)
		p.mu = min(max(1500+300*rng.NormFloat64(), 300), 2700)
		home := len(matchRegions) - 1
		x := rng.Float64()
		for j, w := range matchHomeWeights {
			if x < w {
				home = j
				break
			}
			x -= w
		}
		homeMS := 10 + rng.Float64()*50
		p.regions = map[string]uint32{matchRegions[home]: uint32(math.Round(homeMS))}
		others := make([]int, 0, len(matchRegions)-1)
		for j := range matchRegions {
			if j != home {
				others = append(others, j)
			}
		}
		sort.Slice(others, func(a, b int) bool { return matchRegionRTT[home][others[a]] < matchRegionRTT[home][others[b]] })
		for _, j := range others[:2+rng.IntN(3)] {
			ms := matchRegionRTT[home][j] + homeMS/2 + (rng.Float64()*30 - 15)
			p.regions[matchRegions[j]] = uint32(math.Round(min(max(ms, 80), 250)))
		}
	}
	return out
}

// login authenticates every player with bounded concurrency, spread over
// the servers, and prepares each player's ticket request.
func (r *matchRun) login(ctx, loadCtx context.Context, servers []launch.Addrs) error {
	o := r.opts
	sem := make(chan struct{}, o.ConnectConcurrency)
	var wg sync.WaitGroup
	for i := range r.players {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := &r.players[i]
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			sess, err := rally.AuthenticateDevice(cctx, "http://"+servers[i%len(servers)].HTTP, p.device, "", true)
			if err != nil {
				r.fail(mErrLogin, err.Error())
				return
			}
			p.userID = sess.UserID
			p.ctx = metadata.NewOutgoingContext(loadCtx, metadata.Pairs("authorization", "Bearer "+sess.Token))
			p.req = &matchv1.TicketRequest{
				Queue:           o.Queue,
				Players:         []*matchv1.TicketPlayer{{UserId: sess.UserID, Rating: &matchv1.Rating{Mu: p.mu, Sigma: 200}}},
				RegionLatencyMs: p.regions,
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ok []int
	for i, p := range r.players {
		if p.userID != "" {
			r.byUser[p.userID] = i
			ok = append(ok, i)
		}
	}
	if len(ok) < o.Clients {
		r.errMu.Lock()
		defer r.errMu.Unlock()
		return fmt.Errorf("match: only %d of %d players logged in (need %d); errors: %v", len(ok), len(r.players), o.Clients, r.errShown)
	}
	r.free = make(chan int, len(ok))
	for _, i := range ok {
		r.free <- i
	}
	return nil
}

// dial opens the gRPC connections, spread evenly over the servers, and
// waits for each to be ready.
func (r *matchRun) dial(ctx context.Context, servers []launch.Addrs) ([][]*grpc.ClientConn, error) {
	per := max(1, (r.opts.GRPCConns+len(servers)-1)/len(servers))
	conns := make([][]*grpc.ClientConn, len(servers))
	for s, a := range servers {
		for range per {
			c, err := grpc.NewClient(a.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return conns, err
			}
			conns[s] = append(conns[s], c)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, cs := range conns {
		for _, c := range cs {
			c.Connect()
			for st := c.GetState(); st != connectivity.Ready; st = c.GetState() {
				if !c.WaitForStateChange(dctx, st) {
					r.fail(mErrConn, c.Target()+": "+st.String())
					return conns, fmt.Errorf("match: gRPC connection to %s not ready: %s", c.Target(), st)
				}
			}
		}
	}
	return conns, nil
}

// pacer is a token bucket shared by all clients: one ticket every period,
// with up to a tenth of a second of unused tokens saved up.
type pacer struct {
	mu     sync.Mutex
	next   time.Time
	period time.Duration
	burst  time.Duration
}

func newPacer(rate float64) *pacer {
	return &pacer{period: time.Duration(float64(time.Second) / rate), burst: 100 * time.Millisecond}
}

func (p *pacer) reserve(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if floor := now.Add(-p.burst); p.next.Before(floor) {
		p.next = floor
	}
	at := p.next
	p.next = p.next.Add(p.period)
	return at
}

func (p *pacer) wait(ctx context.Context) error { return sleepUntil(ctx, p.reserve(time.Now())) }

// clientLoop keeps one FindOpponent stream open: a free player's fresh
// ticket, followed to its outcome, then the next.
func (r *matchRun) clientLoop(ctx context.Context, c *matchClient) {
	for ctx.Err() == nil {
		if r.pace != nil && r.pace.wait(ctx) != nil {
			return
		}
		var p int
		select {
		case p = <-r.free:
		case <-ctx.Done():
			return
		}
		ok := r.ticket(c, p)
		r.free <- p
		if !ok {
			// Do not spin on a failing server.
			_ = sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		}
	}
}

// ticket runs one FindOpponent stream to its end; false on an error.
func (r *matchRun) ticket(c *matchClient, p int) bool {
	pl := &r.players[p]
	rec := ticketRec{player: int32(p), sent: time.Now().UnixNano()}
	c.sent.Add(1)
	r.open.Add(1)
	defer r.open.Add(-1)
	stream, err := c.mc.FindOpponent(pl.ctx, pl.req)
	if err != nil {
		if r.closing.Load() {
			return true
		}
		rec.out, rec.ended = outError, time.Now().UnixNano()
		c.recs = append(c.recs, rec)
		r.fail(mErrOpen, err.Error())
		return false
	}
	terminal := false
	for {
		u, err := stream.Recv()
		now := time.Now().UnixNano()
		if err != nil {
			switch {
			case r.closing.Load():
			case err == io.EOF && terminal:
				return true
			case err == io.EOF:
				rec.out, rec.ended = outError, now
				r.fail(mErrEOF, "ticket "+rec.id+": stream ended without an outcome")
			default:
				rec.out, rec.ended = outError, now
				r.fail(mErrStream, status.Code(err).String()+": "+status.Convert(err).Message())
			}
			if !terminal {
				c.recs = append(c.recs, rec)
			}
			return rec.out != outError
		}
		if rec.id == "" {
			rec.id = u.GetTicket().GetId()
		}
		if terminal {
			r.fail(mErrUpdate, fmt.Sprintf("ticket %s: %s after the outcome", rec.id, u.GetKind()))
			if u.GetKind() == matchv1.TicketUpdate_KIND_MATCHED {
				dup := rec
				dup.match, dup.users, dup.ended, dup.again = u.GetAssignment().GetMatchId(), teamUsers(u.GetAssignment()), now, true
				c.recs = append(c.recs, dup)
			}
			continue
		}
		switch u.GetKind() {
		case matchv1.TicketUpdate_KIND_QUEUED:
			if rec.queued == 0 {
				rec.queued = now
			}
		case matchv1.TicketUpdate_KIND_WIDENED:
			c.widened.Add(1)
		case matchv1.TicketUpdate_KIND_MATCHED:
			a := u.GetAssignment()
			rec.out, rec.ended, rec.match, rec.users = outMatched, now, a.GetMatchId(), teamUsers(a)
			if rec.match == "" || a.GetRoomId() == "" || !slices.Contains(rec.users, pl.userID) {
				r.fail(mErrUpdate, fmt.Sprintf("ticket %s: assignment without match, room or this player: %v", rec.id, a))
			}
			c.matched.Add(1)
			c.mu.Lock()
			c.hist.add(now - rec.sent)
			c.mu.Unlock()
		case matchv1.TicketUpdate_KIND_EXPIRED:
			rec.out, rec.ended = outExpired, now
		case matchv1.TicketUpdate_KIND_CANCELLED:
			rec.out, rec.ended = outCancelled, now
		default:
			r.fail(mErrUpdate, fmt.Sprintf("ticket %s: update of kind %s", rec.id, u.GetKind()))
		}
		if rec.out != outOpen {
			terminal = true
			c.recs = append(c.recs, rec)
		}
	}
}

func teamUsers(a *matchv1.Assignment) []string {
	var out []string
	for _, t := range a.GetTeams() {
		out = append(out, t.GetUserIds()...)
	}
	return out
}

// progress prints a line per second: elapsed time, phase, open streams,
// tickets sent and matched in the last second, and the p99 time to match
// of the phase so far (from coarse histograms, within 12.5%).
func (r *matchRun) progress(clients []*matchClient, start, winStart, winEnd time.Time, done <-chan struct{}) {
	progressLoop(r.opts.Progress, start, winStart, winEnd, done, func(total *histTotal) (sent, matched, errs int64) {
		for _, c := range clients {
			sent += c.sent.Load()
			matched += c.matched.Load()
			c.mu.Lock()
			total.drain(&c.hist)
			c.mu.Unlock()
		}
		for i := range r.errs {
			errs += r.errs[i].Load()
		}
		return sent, matched, errs
	}, func(elapsed float64, phase string, sent, matched, p99 float64, errs int64) string {
		return fmt.Sprintf("%6.1fs %-7s open %6d  sent %8.0f/s  matched %8.0f/s  p99 %8.1f ms  errors %d\n",
			elapsed, phase, r.open.Load(), sent, matched, p99, errs)
	})
}

// summarise derives the run's figures from every ticket's record.
func (r *matchRun) summarise(res *MatchResult, clients []*matchClient, ws, we int64) {
	var recs []ticketRec
	for _, c := range clients {
		recs = append(recs, c.recs...)
		res.Widened += c.widened.Load()
	}
	in := func(ns int64) bool { return ns >= ws && ns < we }
	var ttm, ttq []int64
	var maxTTM, maxTTQ int64
	for _, t := range recs {
		if t.again {
			continue
		}
		if in(t.sent) {
			res.TicketsSent++
			if t.queued != 0 {
				d := t.queued - t.sent
				ttq = append(ttq, d)
				maxTTQ = max(maxTTQ, d)
			}
		}
		if in(t.sent) && t.out != outMatched {
			res.Unmatched++
		}
		if !in(t.ended) {
			continue
		}
		switch t.out {
		case outMatched:
			res.TicketsMatched++
			d := t.ended - t.sent
			ttm = append(ttm, d)
			maxTTM = max(maxTTM, d)
		case outExpired:
			res.Expired++
		case outCancelled:
			res.Cancelled++
		}
	}
	secs := r.opts.Duration.Seconds()
	res.TicketsSentPerSec = round(float64(res.TicketsSent) / secs)
	res.TicketsMatchedPerSec = round(float64(res.TicketsMatched) / secs)
	p := nsPercentilesMS(ttm, 50, 90, 99)
	res.TimeToMatch = LatencyMS{P50: p[0], P90: p[1], P99: p[2], Max: round(float64(maxTTM) / 1e6)}
	p = nsPercentilesMS(ttq, 50, 90, 99)
	res.TimeToQueued = LatencyMS{P50: p[0], P90: p[1], P99: p[2], Max: round(float64(maxTTQ) / 1e6)}

	a := checkAssignments(recs, r.byUser, func(i int) float64 { return r.players[i].mu }, ws, we)
	res.Matches = a.matches
	res.MatchesPerSec = round(float64(a.matches) / secs)
	res.DoubleAssignments, res.Inconsistent, res.DoubleSample = a.doubles, a.inconsistent, a.samples
	slices.Sort(a.spreads)
	res.RatingSpread = SpreadStats{P50: round(Percentile(a.spreads, 50)), P99: round(Percentile(a.spreads, 99))}
	if len(a.spreads) > 0 {
		res.RatingSpread.Max = round(a.spreads[len(a.spreads)-1])
	}

	res.ErrorKinds = map[string]int64{}
	for i, k := range matchErrKinds {
		v := r.errs[i].Load()
		res.ErrorKinds[k] = v
		res.Errors += v
	}
	r.errMu.Lock()
	res.ErrorSample = append([]string(nil), r.errShown...)
	r.errMu.Unlock()
}

// assignmentCheck is what checkAssignments found.
type assignmentCheck struct {
	matches int       // distinct match ids first seen inside the window
	spreads []float64 // their rating spreads
	doubles int64
	// inconsistent counts players listed in a match whose open ticket
	// expired, was cancelled, or never saw the match before the load stopped.
	inconsistent int64
	samples      []string
}

func (a *assignmentCheck) double(msg string) {
	a.doubles++
	if len(a.samples) < 10 {
		a.samples = append(a.samples, msg)
	}
}

// checkAssignments groups matched tickets by match id and looks for players
// in two matches at once. Each player has one open ticket at a time, so a
// player listed in a match that none of the player's tickets was matched
// into was matched twice (or without a ticket), unless the ticket open then
// ended in a stream error, whose outcome is unknown.
func checkAssignments(recs []ticketRec, byUser map[string]int, mu func(player int) float64, ws, we int64) assignmentCheck {
	type matchInfo struct {
		users []string
		key   string
		first int64
	}
	var out assignmentCheck
	matches := map[string]*matchInfo{}
	ticketMatch := map[string]string{}
	// Per player: the match ids its tickets were matched into, and its
	// tickets by send time.
	playerMatches := map[int32]map[string]bool{}
	playerTickets := map[int32][]int{}
	for i, t := range recs {
		if !t.again {
			playerTickets[t.player] = append(playerTickets[t.player], i)
		}
		if t.out != outMatched || t.match == "" {
			continue
		}
		if prev, ok := ticketMatch[t.id]; ok && prev != t.match {
			out.double(fmt.Sprintf("ticket %s matched into %s and %s", t.id, prev, t.match))
		}
		ticketMatch[t.id] = t.match
		if playerMatches[t.player] == nil {
			playerMatches[t.player] = map[string]bool{}
		}
		playerMatches[t.player][t.match] = true
		sorted := slices.Clone(t.users)
		slices.Sort(sorted)
		key := strings.Join(sorted, ",")
		m := matches[t.match]
		if m == nil {
			matches[t.match] = &matchInfo{users: t.users, key: key, first: t.ended}
			continue
		}
		if m.key != key {
			out.double(fmt.Sprintf("match %s announced with players [%s] and [%s]", t.match, m.key, key))
		}
		m.first = min(m.first, t.ended)
	}
	for _, ids := range playerTickets {
		sort.Slice(ids, func(a, b int) bool { return recs[ids[a]].sent < recs[ids[b]].sent })
	}
	ids := make([]string, 0, len(matches))
	for id := range matches {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := matches[id]
		if m.first < ws || m.first >= we {
			continue
		}
		out.matches++
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, u := range m.users {
			p, ok := byUser[u]
			if !ok {
				continue // not one of this run's players
			}
			lo, hi = min(lo, mu(p)), max(hi, mu(p))
			if playerMatches[int32(p)][id] {
				continue
			}
			// The ticket open when the match was first seen.
			var open *ticketRec
			for _, i := range playerTickets[int32(p)] {
				t := &recs[i]
				if t.sent > m.first {
					break
				}
				if t.out == outOpen || t.ended >= m.first {
					open = t
				}
			}
			switch {
			case open != nil && open.out == outError:
				// Its outcome is unknown; the error is counted already.
			case open == nil:
				out.double(fmt.Sprintf("player %s in match %s without an open ticket", u, id))
			case open.out == outMatched:
				out.double(fmt.Sprintf("player %s in match %s while its ticket %s was matched into %s", u, id, open.id, open.match))
			default:
				// Not a second match, but the player was told something
				// else (or nothing before the load stopped).
				out.inconsistent++
				if len(out.samples) < 10 {
					out.samples = append(out.samples, fmt.Sprintf("player %s in match %s while its ticket %s %s", u, id, open.id, outcomeText(open)))
				}
			}
		}
		if hi >= lo {
			out.spreads = append(out.spreads, hi-lo)
		}
	}
	return out
}

func outcomeText(t *ticketRec) string {
	switch t.out {
	case outExpired:
		return "expired"
	case outCancelled:
		return "was cancelled"
	}
	return "was still waiting"
}

func scrapeAll(ctx context.Context, httpc *http.Client, servers []launch.Addrs) ([]*scrape, []error) {
	out := make([]*scrape, len(servers))
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = scrapeMetrics(ctx, httpc, "http://"+s.HTTP+"/metrics")
		}()
	}
	wg.Wait()
	return out, errs
}

// matchServerFigures sums CPU and memory over the replicas, keeps each
// one's share, and sums the rally_ counter deltas.
func matchServerFigures(res *MatchResult, servers []launch.Addrs, external bool, before, after []*scrape, beforeErr, afterErr []error) {
	res.ServerCounter = map[string]float64{}
	res.PerReplica = make([]MatchReplica, len(servers))
	for i := range servers {
		rep := &res.PerReplica[i]
		if external {
			rep.HTTP = servers[i].HTTP
		}
		var b, a *scrape
		if i < len(before) {
			b = before[i]
		}
		if i < len(after) {
			a = after[i]
		}
		for _, errs := range [][]error{beforeErr, afterErr} {
			if i < len(errs) && errs[i] != nil && rep.MetricsError == "" {
				rep.MetricsError = errs[i].Error()
			}
		}
		if rep.MetricsError == "" && (a == nil || b == nil) {
			rep.MetricsError = "no scrape"
		}
		if rep.MetricsError != "" {
			if res.MetricsError == "" {
				res.MetricsError = fmt.Sprintf("replica %d: %s", i, rep.MetricsError)
			}
			continue
		}
		wall := a.at.Sub(b.at).Seconds()
		c0, ok0 := b.value("process_cpu_seconds_total")
		c1, ok1 := a.value("process_cpu_seconds_total")
		if ok0 && ok1 && wall > 0 {
			rep.CPU = round((c1 - c0) / wall)
		}
		if rss, ok := a.value("process_resident_memory_bytes"); ok {
			rep.RSSMB = round(rss / 1e6)
		}
		m0, _ := b.value("rally_match_matches_total")
		m1, _ := a.value("rally_match_matches_total")
		rep.Matches = round(m1 - m0)
		ps, maxV, _ := histDeltaPercentiles(b.histogram("rally_match_pass_seconds"), a.histogram("rally_match_pass_seconds"), 50, 95, 99)
		rep.PassMS = PauseMS{P50: round(ps[0] * 1e3), P95: round(ps[1] * 1e3), P99: round(ps[2] * 1e3), Max: round(maxV * 1e3)}
		if h0, h1 := b.histogram("rally_match_pass_seconds"), a.histogram("rally_match_pass_seconds"); h0 != nil && h1 != nil {
			if rep.Passes = h1.GetSampleCount() - h0.GetSampleCount(); rep.Passes > 0 {
				rep.PassMeanMS = round((h1.GetSampleSum() - h0.GetSampleSum()) / float64(rep.Passes) * 1e3)
			}
		}
		rep.RoomsOpen, _ = a.value("rally_room_rooms")
		if h0, h1 := b.histogram("rally_room_tick_seconds"), a.histogram("rally_room_tick_seconds"); h0 != nil && h1 != nil && wall > 0 {
			rep.RoomTicksPerSec = round(float64(h1.GetSampleCount()-h0.GetSampleCount()) / wall)
		}
		res.ServerCPU += rep.CPU
		res.ServerRSSMB += rep.RSSMB
		bc := b.counters("rally_")
		for k, v := range a.counters("rally_") {
			if d := v - bc[k]; d != 0 {
				res.ServerCounter[k] = round(res.ServerCounter[k] + d)
			}
		}
	}
	res.ServerCPU, res.ServerRSSMB = round(res.ServerCPU), round(res.ServerRSSMB)
}

// WriteTable prints the result for a terminal.
func (r *MatchResult) WriteTable(w io.Writer) {
	pace := "as fast as the clients go"
	if r.TargetRate > 0 {
		pace = fmt.Sprintf("paced at %g tickets/s", r.TargetRate)
	}
	fmt.Fprintf(w, "match: queue %s, %d clients, %d players, %d replica(s), %s store, %d gRPC conns, %s, %gs after %gs warmup (setup %.1fs)\n",
		r.Queue, r.Clients, r.Players, r.Replicas, r.Store, r.GRPCConns, pace, r.DurationS, r.WarmupS, r.SetupS)
	fmt.Fprintf(w, "%10s %10s %10s %9s %9s %9s %9s %8s %8s %8s %8s\n",
		"sent", "matched", "matches", "ttm p50", "ttm p90", "ttm p99", "ttm max", "spr p50", "spr p99", "doubles", "errors")
	fmt.Fprintf(w, "%8.0f/s %8.0f/s %8.0f/s %7.1fms %7.1fms %7.1fms %7.0fms %8.0f %8.0f %8d %8d\n",
		r.TicketsSentPerSec, r.TicketsMatchedPerSec, r.MatchesPerSec, r.TimeToMatch.P50, r.TimeToMatch.P90,
		r.TimeToMatch.P99, r.TimeToMatch.Max, r.RatingSpread.P50, r.RatingSpread.P99, r.DoubleAssignments, r.Errors)
	fmt.Fprintf(w, "%10s %10s %10s %9s %9s %9s %9s %8s\n",
		"srv cpu", "srv rss", "gen cpu", "queued 99", "expired", "cancelled", "unmatched", "widened")
	fmt.Fprintf(w, "%6.2fcore %8.1fMB %6.2fcore %7.1fms %9d %9d %9d %8d\n",
		r.ServerCPU, r.ServerRSSMB, r.LoadgenCPU, r.TimeToQueued.P99, r.Expired, r.Cancelled, r.Unmatched, r.Widened)
	if len(r.PerReplica) > 1 {
		for i, rep := range r.PerReplica {
			fmt.Fprintf(w, "replica %d: %.2f core, %.1f MB, %.0f matches, %d passes of %.1f ms on average, %.0f rooms open, %.0f room ticks/s\n",
				i, rep.CPU, rep.RSSMB, rep.Matches, rep.Passes, rep.PassMeanMS, rep.RoomsOpen, rep.RoomTicksPerSec)
		}
	} else if len(r.PerReplica) == 1 {
		rep := r.PerReplica[0]
		fmt.Fprintf(w, "matching passes: %d, mean %.1f ms; p50 %.1f ms, p99 %.1f ms (bucket bounds); %.0f rooms open, %.0f room ticks/s\n",
			rep.Passes, rep.PassMeanMS, rep.PassMS.P50, rep.PassMS.P99, rep.RoomsOpen, rep.RoomTicksPerSec)
	}
	if r.MachineCPU > 0 {
		redis := ""
		if r.RedisCPU > 0 {
			redis = fmt.Sprintf(", redis %.2f", r.RedisCPU)
		}
		fmt.Fprintf(w, "machine: %.2f of %d cores busy (servers %.2f, load generator %.2f%s, other %.2f)\n",
			r.MachineCPU, r.CPUs, r.ServerCPU, r.LoadgenCPU, redis, max(r.MachineCPU-r.ServerCPU-r.LoadgenCPU-r.RedisCPU, 0))
	}
	if r.Inconsistent > 0 {
		fmt.Fprintf(w, "inconsistent outcomes: %d\n", r.Inconsistent)
	}
	for _, s := range r.DoubleSample {
		fmt.Fprintf(w, "  %s\n", s)
	}
	writeProblems(w, r.Errors, r.ErrorKinds, r.ErrorSample, r.MetricsError)
}

// redisCPU reads a Redis server's CPU seconds (user and system) with
// INFO cpu over a bare RESP connection.
func redisCPU(ctx context.Context, rawURL string) (float64, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "6379")
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", host)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(conn)
	cmd := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := io.WriteString(conn, b.String()); err != nil {
			return "", err
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "-"):
			return "", errors.New("redis: " + line[1:])
		case strings.HasPrefix(line, "$"):
			n, err := strconv.Atoi(line[1:])
			if err != nil || n < 0 {
				return "", fmt.Errorf("redis: reply %q", line)
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(br, buf); err != nil {
				return "", err
			}
			return string(buf[:n]), nil
		}
		return line, nil
	}
	if pw, ok := u.User.Password(); ok {
		args := []string{"AUTH", pw}
		if name := u.User.Username(); name != "" {
			args = []string{"AUTH", name, pw}
		}
		if _, err := cmd(args...); err != nil {
			return 0, err
		}
	}
	info, err := cmd("INFO", "cpu")
	if err != nil {
		return 0, err
	}
	var total float64
	found := 0
	for _, l := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			total += f
			found++
		}
	}
	if found != 2 {
		return 0, errors.New("redis: INFO cpu without used_cpu_user and used_cpu_sys")
	}
	return total, nil
}
