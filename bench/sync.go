package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/launch"
	"github.com/rallyhq/rally/internal/room"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// Sync modes.
const (
	SyncRelayed       = "relayed"
	SyncAuthoritative = "authoritative"
)

// SyncOptions configures Sync.
type SyncOptions struct {
	// Target is the base URL of a running server (http://host:port); empty
	// starts Binary with a fresh data directory for the run.
	Target string
	Binary string

	Clients  int
	RoomSize int
	// Payload is the size of each input in bytes; it carries the send time.
	Payload int
	// Rate is inputs per second per client.
	Rate     float64
	Duration time.Duration
	// Warmup runs the load before the measured window; it is not counted.
	Warmup   time.Duration
	Mode     string
	TickRate int
	JSONFile string
	// ConnectConcurrency bounds concurrent logins, dials and joins.
	ConnectConcurrency int
	// Progress receives one line per second while the load runs (nil: none).
	Progress io.Writer
}

// maxLatencySamples bounds the memory of kept latency samples; past it each
// client keeps every k-th sample.
const maxLatencySamples = 5_000_000

// LatencyMS holds latency percentiles in milliseconds.
type LatencyMS struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// PauseMS holds GC pause percentiles in milliseconds.
type PauseMS struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// SyncResult is what one realtime load run measured.
type SyncResult struct {
	Scenario     string  `json:"scenario"`
	Mode         string  `json:"mode"`
	Clients      int     `json:"clients"`
	Rooms        int     `json:"rooms"`
	RoomSize     int     `json:"room_size"`
	PayloadBytes int     `json:"payload_bytes"`
	RateHz       float64 `json:"rate_hz"`
	TickRateHz   int     `json:"tick_rate_hz,omitempty"`
	DurationS    float64 `json:"duration_s"`
	WarmupS      float64 `json:"warmup_s"`

	TargetInputsPerSec float64 `json:"target_inputs_per_sec"`
	IngressMsgsPerSec  float64 `json:"ingress_msgs_per_sec"`
	EgressFramesPerSec float64 `json:"egress_frames_per_sec"`

	Latency           LatencyMS `json:"latency_ms"`
	LatencySamples    int64     `json:"latency_samples"`
	LatencyKept       int       `json:"latency_samples_kept"`
	LatencyExpected   int64     `json:"latency_samples_expected"`
	LatencyDefinition string    `json:"latency_definition"`

	GCPause     PauseMS `json:"gc_pause_ms"`
	GCPauses    uint64  `json:"gc_pauses"`
	GCPauseNote string  `json:"gc_pause_note"`
	ServerCPU   float64 `json:"server_cpu_cores"`
	ServerRSSMB float64 `json:"server_rss_mb"`
	LoadgenCPU  float64 `json:"loadgen_cpu_cores"`
	// MachineCPU is every process's CPU on the machine (Linux), so load
	// from outside the run shows: machine - server - loadgen.
	MachineCPU    float64            `json:"machine_cpu_cores,omitempty"`
	MetricsError  string             `json:"metrics_error,omitempty"`
	ServerTickMS  *PauseMS           `json:"server_tick_ms,omitempty"`
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

const (
	relayedDefinition = "relayed: receive time of each Data frame at every other client of the sender's room " +
		"minus the send time embedded in the payload (bytes 0-8, unix ns; sender and receivers share one clock); " +
		"one sample per (message, receiver), for messages sent inside the measured window"
	authoritativeDefinition = "authoritative: for each input sent at time s by client A, the first state frame " +
		"callback (OnState) on each other client B of the room that happens after s gives one sample, B's callback " +
		"time minus s; one sample per (input, other client), for inputs sent inside the measured window. It covers " +
		"waiting for the next tick plus the frame's delivery; it does not check that the frame carries the input, " +
		"so a sample can be up to one tick period short when the input reached the server after that frame was built"
	gcPauseNote = "GC pause figures are upper bounds of go_gc_pauses_seconds buckets (delta between scrapes at " +
		"the window's start and end); 0 when no GC ran"
)

// Error kinds counted in SyncResult.ErrorKinds.
const (
	errDial       = "dial"
	errRoom       = "room"
	errSend       = "send"
	errServer     = "server_error"
	errDisconnect = "disconnect"
)

// syncRun is the state shared by the clients of one run.
type syncRun struct {
	opts   SyncOptions
	relay  bool
	tsOff  int // where the send time sits in the payload
	period time.Duration

	// The measured window in unix ns; zero until the load starts.
	winStart, winEnd atomic.Int64
	closing          atomic.Bool

	errs     [5]atomic.Int64
	errMu    sync.Mutex
	errShown []string
}

var errKinds = [...]string{errDial, errRoom, errSend, errServer, errDisconnect}

func (r *syncRun) fail(kind string, msg string) {
	for i, k := range errKinds {
		if k == kind {
			r.errs[i].Add(1)
		}
	}
	r.errMu.Lock()
	if len(r.errShown) < 8 {
		r.errShown = append(r.errShown, kind+": "+msg)
	}
	r.errMu.Unlock()
}

func (r *syncRun) inWindow(ns int64) bool {
	ws := r.winStart.Load()
	return ws != 0 && ns >= ws && ns < r.winEnd.Load()
}

// syncGroup is one room's clients.
type syncGroup struct {
	roomID  string
	members []*syncClient
}

// syncClient is one simulated player.
type syncClient struct {
	run    *syncRun
	idx    int
	c      *rally.Client
	grp    atomic.Pointer[syncGroup] // set once every member has joined
	sent   atomic.Int64              // all inputs sent
	sentIn int64                     // inputs sent in the window; sender goroutine only

	// Receive side, guarded by mu (the SDK calls back on its reader goroutine;
	// the progress printer reads too).
	mu     sync.Mutex
	recv   int64 // frames delivered
	recvIn int64 // frames delivered in the window
	lat    *sampler
	hist   logHist

	// Authoritative: send times of this client's inputs, read by its peers.
	logMu sync.Mutex
	sends []int64
	// Per peer, the next of its sends not yet matched to a state frame here;
	// reader goroutine only.
	cursors []int
	scratch []int64
}

func (c *syncClient) record(now, sentAt int64, inWin bool) {
	d := now - sentAt
	c.hist.add(d)
	if inWin {
		c.lat.add(d)
	}
}

func (c *syncClient) onData(_, _ string, _ uint32, payload []byte) {
	now := time.Now().UnixNano()
	r := c.run
	c.mu.Lock()
	c.recv++
	if r.inWindow(now) {
		c.recvIn++
	}
	if r.relay && len(payload) >= r.tsOff+8 {
		s := int64(binary.LittleEndian.Uint64(payload[r.tsOff:]))
		c.record(now, s, r.inWindow(s))
	}
	c.mu.Unlock()
}

func (c *syncClient) onState(_ string, _ uint32) {
	now := time.Now().UnixNano()
	r := c.run
	g := c.grp.Load()
	if g != nil && !r.relay {
		if len(c.cursors) != len(g.members) {
			c.cursors = make([]int, len(g.members))
		}
		c.scratch = c.scratch[:0]
		for j, p := range g.members {
			if p == c {
				continue
			}
			// Copy out under the peer's lock, record under ours: never both.
			p.logMu.Lock()
			cur := c.cursors[j]
			end := cur
			for end < len(p.sends) && p.sends[end] < now {
				end++
			}
			c.scratch = append(c.scratch, p.sends[cur:end]...)
			p.logMu.Unlock()
			c.cursors[j] = end
		}
	}
	c.mu.Lock()
	c.recv++
	if r.inWindow(now) {
		c.recvIn++
	}
	for _, s := range c.scratch {
		c.record(now, s, r.inWindow(s))
	}
	c.scratch = c.scratch[:0]
	c.mu.Unlock()
}

// sendLoop sends inputs at the run's rate from start (plus a random phase,
// so clients do not send in lockstep) until end.
func (c *syncClient) sendLoop(ctx context.Context, roomID string, start, end time.Time) {
	r := c.run
	payload := make([]byte, r.opts.Payload)
	for i := range payload {
		payload[i] = byte(rand.N(256))
	}
	t := time.NewTimer(time.Until(start.Add(rand.N(r.period))))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return
	}
	tick := time.NewTicker(r.period)
	defer tick.Stop()
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		ns := now.UnixNano()
		if !r.relay {
			room.EncodeArenaMove(payload[:0], rand.Float64()*2-1, rand.Float64()*2-1)
		}
		binary.LittleEndian.PutUint64(payload[r.tsOff:], uint64(ns))
		if !r.relay {
			c.logMu.Lock()
			c.sends = append(c.sends, ns)
			c.logMu.Unlock()
		}
		if err := c.c.Send(roomID, room.ArenaOpMove, payload); err != nil {
			if !r.closing.Load() && !errors.Is(err, rally.ErrClosed) {
				r.fail(errSend, err.Error())
			}
			return // the connection is gone; the disconnect is counted apart
		}
		c.sent.Add(1)
		if r.inWindow(ns) {
			c.sentIn++
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// Sync runs the realtime room load: opts.Clients players in rooms of
// opts.RoomSize, each sending opts.Rate inputs per second, and measures
// input-to-other-player latency, throughput and the server's resources.
func Sync(ctx context.Context, opts SyncOptions) (*SyncResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	res := &SyncResult{
		Scenario: "sync", Mode: opts.Mode, Clients: opts.Clients, RoomSize: opts.RoomSize,
		PayloadBytes: opts.Payload, RateHz: opts.Rate, DurationS: opts.Duration.Seconds(), WarmupS: opts.Warmup.Seconds(),
		TargetInputsPerSec: round(float64(opts.Clients) * opts.Rate),
		GCPauseNote:        gcPauseNote,
		GOOS:               runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), At: time.Now().UTC(),
	}
	r := &syncRun{opts: opts, relay: opts.Mode == SyncRelayed, period: time.Duration(float64(time.Second) / opts.Rate)}
	if r.relay {
		res.LatencyDefinition = relayedDefinition
	} else {
		r.tsOff = 4 // after the arena move
		res.TickRateHz = opts.TickRate
		res.LatencyDefinition = authoritativeDefinition
	}

	base := strings.TrimRight(opts.Target, "/")
	res.Server = base
	if base == "" {
		env := serverEnv(opts)
		res.Server, res.Binary, res.ServerEnv = "started by the bench", filepath.Base(opts.Binary), env
		addrs, cleanup, err := startServer(ctx, opts.Binary, env)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		base = "http://" + addrs.HTTP
	}

	clients := r.connect(ctx, base)
	groups := r.joinRooms(ctx, clients)
	if len(groups) == 0 {
		closeAll(r, clients)
		return nil, fmt.Errorf("sync: no room could be formed; errors: %v", r.errShown)
	}
	res.Rooms = len(groups)

	// Load: every client of a formed room sends from start to end.
	start := time.Now().Add(100 * time.Millisecond)
	winStart := start.Add(opts.Warmup)
	winEnd := winStart.Add(opts.Duration)
	r.winEnd.Store(winEnd.UnixNano())
	r.winStart.Store(winStart.UnixNano())
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var senders sync.WaitGroup
	var active []*syncClient
	for _, g := range groups {
		for _, c := range g.members {
			active = append(active, c)
			senders.Add(1)
			go func() { defer senders.Done(); c.sendLoop(loadCtx, g.roomID, start, winEnd) }()
		}
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Add(1)
	go func() { defer progressWG.Done(); r.progress(active, start, winStart, winEnd, progressDone) }()

	// Resource figures bracket the measured window.
	httpc := &http.Client{Timeout: 5 * time.Second}
	var before, after *scrape
	var ruBefore, ruAfter time.Duration
	var wallBefore, wallAfter time.Time
	var machBefore, machAfter [2]uint64
	var metricsErr error
	if err := sleepUntil(ctx, winStart); err == nil {
		before, metricsErr = scrapeMetrics(ctx, httpc, base+"/metrics")
		ruBefore, wallBefore = selfCPU(), time.Now()
		machBefore = machineCPU()
	}
	if err := sleepUntil(ctx, winEnd); err == nil {
		ruAfter, wallAfter = selfCPU(), time.Now()
		machAfter = machineCPU()
		var err error
		if after, err = scrapeMetrics(ctx, httpc, base+"/metrics"); err != nil && metricsErr == nil {
			metricsErr = err
		}
	}
	// Let frames in flight at the window's end arrive.
	drain := time.Second
	if opts.TickRate > 0 {
		drain = max(drain, 3*time.Second/time.Duration(opts.TickRate))
	}
	_ = sleepUntil(ctx, winEnd.Add(drain))
	stopLoad()
	senders.Wait()
	close(progressDone)
	progressWG.Wait()
	closeAll(r, clients)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r.summarise(res, groups, active)
	if metricsErr != nil {
		res.MetricsError = metricsErr.Error()
	}
	if wall := wallAfter.Sub(wallBefore).Seconds(); wall > 0 {
		res.LoadgenCPU = round((ruAfter - ruBefore).Seconds() / wall)
	}
	if total := machAfter[1] - machBefore[1]; machBefore[1] != 0 && total > 0 {
		res.MachineCPU = round(float64(machAfter[0]-machBefore[0]) / float64(total) * float64(runtime.NumCPU()))
	}
	if before != nil && after != nil {
		serverFigures(res, before, after, r.relay)
	}
	if opts.JSONFile != "" {
		out, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(opts.JSONFile, append(out, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (o *SyncOptions) validate() error {
	switch {
	case o.Target == "" && o.Binary == "":
		return errors.New("sync: need a target URL or a binary to start")
	case o.Clients < 2:
		return errors.New("sync: need at least 2 clients")
	case o.RoomSize < 2 || o.RoomSize > 1024:
		return errors.New("sync: room size must be 2-1024")
	case o.Rate <= 0 || o.Rate > 10000:
		return errors.New("sync: rate must be above 0 and at most 10000 Hz")
	case o.Duration <= 0 || o.Warmup < 0:
		return errors.New("sync: duration must be positive and warmup not negative")
	case o.Mode != SyncRelayed && o.Mode != SyncAuthoritative:
		return fmt.Errorf("sync: mode must be %s or %s", SyncRelayed, SyncAuthoritative)
	case o.Mode == SyncRelayed && o.Payload < 8:
		return errors.New("sync: relayed payload must be at least 8 bytes (the send time)")
	case o.Mode == SyncAuthoritative && o.Payload < 12:
		return errors.New("sync: authoritative payload must be at least 12 bytes (move and send time)")
	case o.Mode == SyncAuthoritative && (o.TickRate < 1 || o.TickRate > 128):
		return errors.New("sync: tick rate must be 1-128 Hz")
	}
	if o.Mode == SyncRelayed {
		o.TickRate = 0
	}
	if o.ConnectConcurrency < 1 {
		o.ConnectConcurrency = 1
	}
	return nil
}

// serverEnv raises the per-connection limits of a server the bench starts
// so the load itself is not cut off: each client sends its inputs plus, in
// authoritative rooms, one state acknowledgement per tick.
func serverEnv(o SyncOptions) []string {
	acks := 0
	if o.Mode == SyncAuthoritative {
		acks = o.TickRate
	}
	mps := max(60, int(math.Ceil(2*o.Rate))+acks+10)
	env := []string{
		"RALLY_REALTIME_MAX_MESSAGES_PER_SECOND=" + strconv.Itoa(mps),
		"RALLY_REALTIME_MESSAGE_BURST=" + strconv.Itoa(2*mps),
		"RALLY_REALTIME_SEND_QUEUE=1024",
	}
	if o.Mode == SyncAuthoritative {
		// Inputs wait in a per-player queue until the next tick.
		if q := 4 * int(math.Ceil(o.Rate/float64(o.TickRate))); q > 64 {
			env = append(env, "RALLY_ROOMS_INPUT_QUEUE="+strconv.Itoa(q))
		}
	}
	return env
}

// startServer runs binary on free loopback ports with a fresh data
// directory; cleanup stops it with SIGTERM, waits, and removes the directory.
func startServer(ctx context.Context, binary string, env []string) (launch.Addrs, func(), error) {
	dir, err := os.MkdirTemp("", "rally-sync-")
	if err != nil {
		return launch.Addrs{}, nil, err
	}
	p, err := launch.Start(ctx, binary, []string{"serve",
		"--data-dir", dir, "--log-format", "json",
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--nats-addr", "off",
	}, env)
	if err != nil {
		os.RemoveAll(dir)
		return launch.Addrs{}, nil, err
	}
	cleanup := func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
		defer stop()
		_, _ = p.Stop(stopCtx)
		os.RemoveAll(dir)
	}
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	addrs, err := p.WaitReady(readyCtx)
	if err != nil {
		cleanup()
		return launch.Addrs{}, nil, err
	}
	return addrs, cleanup, nil
}

// connect logs in and dials every client with bounded concurrency; the
// result holds the clients that connected, in index order.
func (r *syncRun) connect(ctx context.Context, base string) []*syncClient {
	o := r.opts
	runID := fmt.Sprintf("%08x", rand.Uint32())
	perClient := maxLatencySamples / o.Clients
	expect := int(o.Rate*o.Duration.Seconds()*float64(o.RoomSize-1)*1.2) + 64
	all := make([]*syncClient, o.Clients)
	sem := make(chan struct{}, o.ConnectConcurrency)
	var wg sync.WaitGroup
	for i := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := &syncClient{run: r, idx: i, lat: newSampler(perClient, expect)}
			if !r.relay {
				c.sends = make([]int64, 0, int(o.Rate*(o.Warmup+o.Duration).Seconds())+64)
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			sess, err := rally.AuthenticateDevice(cctx, base, fmt.Sprintf("bench-%s-%d", runID, i), "", true)
			if err != nil {
				r.fail(errDial, "authenticate: "+err.Error())
				return
			}
			c.c, err = rally.Dial(cctx, sess, rally.Options{
				OnData:  c.onData,
				OnState: c.onState,
				OnError: func(e *rtv1.Error) {
					if !r.closing.Load() {
						r.fail(errServer, e.GetCode().String()+": "+e.GetMessage())
					}
				},
				// A drop is an error of the run, not something to hide.
				DisableReconnect: true,
			})
			if err != nil {
				r.fail(errDial, "dial: "+err.Error())
				return
			}
			go func() {
				<-c.c.Done()
				if !r.closing.Load() {
					r.fail(errDisconnect, fmt.Sprintf("client %d disconnected", i))
				}
			}()
			all[i] = c
		}()
	}
	wg.Wait()
	out := all[:0]
	for _, c := range all {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// joinRooms groups clients into rooms: the first of each group creates it,
// the others join by id. Clients that fail to join are left out.
func (r *syncRun) joinRooms(ctx context.Context, clients []*syncClient) []*syncGroup {
	o := r.opts
	var groups []*syncGroup
	for i := 0; i < len(clients); i += o.RoomSize {
		groups = append(groups, &syncGroup{members: clients[i:min(i+o.RoomSize, len(clients))]})
	}
	handler, tick := "", uint32(0)
	if !r.relay {
		handler, tick = room.ArenaHandler, uint32(o.TickRate)
	}
	sem := make(chan struct{}, o.ConnectConcurrency)
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var joined []*syncClient
			for _, c := range g.members {
				var err error
				if g.roomID == "" {
					var j *rtv1.RoomJoined
					j, err = c.c.CreateRoom(cctx, &rtv1.CreateRoom{Handler: handler, MaxPlayers: uint32(o.RoomSize), TickRate: tick})
					if err == nil {
						g.roomID = j.GetRoom().GetId()
					}
				} else {
					_, err = c.c.JoinRoom(cctx, &rtv1.JoinRoom{RoomId: g.roomID})
				}
				if err != nil {
					r.fail(errRoom, err.Error())
					continue
				}
				joined = append(joined, c)
			}
			g.members = joined
			for _, c := range joined {
				c.grp.Store(g)
			}
		}()
	}
	wg.Wait()
	out := groups[:0]
	for _, g := range groups {
		if len(g.members) >= 2 {
			out = append(out, g)
		}
	}
	return out
}

func closeAll(r *syncRun, clients []*syncClient) {
	r.closing.Store(true)
	sem := make(chan struct{}, max(r.opts.ConnectConcurrency, 1))
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_ = c.c.Close()
		}()
	}
	wg.Wait()
}

// progress prints a line per second: elapsed time, phase, inputs sent and
// frames received in the last second, and the p99 latency of the phase so
// far (from coarse histograms, within 12.5%).
func (r *syncRun) progress(clients []*syncClient, start, winStart, winEnd time.Time, done <-chan struct{}) {
	progressLoop(r.opts.Progress, start, winStart, winEnd, done, func(total *histTotal) (sent, recv, errs int64) {
		for _, c := range clients {
			sent += c.sent.Load()
			c.mu.Lock()
			recv += c.recv
			total.drain(&c.hist)
			c.mu.Unlock()
		}
		for i := range r.errs {
			errs += r.errs[i].Load()
		}
		return sent, recv, errs
	}, func(elapsed float64, phase string, sent, recv, p99 float64, errs int64) string {
		return fmt.Sprintf("%6.1fs %-7s sent %8.0f/s  recv %9.0f/s  p99 %7.1f ms  errors %d\n",
			elapsed, phase, sent, recv, p99, errs)
	})
}

// summarise merges the clients' figures into res.
func (r *syncRun) summarise(res *SyncResult, groups []*syncGroup, clients []*syncClient) {
	var sent, recv, n, expected, maxNS int64
	stride := int64(1)
	for _, g := range groups {
		for _, c := range g.members {
			sent += c.sentIn
			expected += c.sentIn * int64(len(g.members)-1)
		}
	}
	for _, c := range clients {
		c.mu.Lock()
		recv += c.recvIn
		n += c.lat.n
		maxNS = max(maxNS, c.lat.max)
		stride = max(stride, c.lat.stride)
		c.mu.Unlock()
	}
	var all []int64
	for _, c := range clients {
		c.mu.Lock()
		all = append(all, c.lat.thinTo(stride)...)
		c.mu.Unlock()
	}
	secs := r.opts.Duration.Seconds()
	res.IngressMsgsPerSec = round(float64(sent) / secs)
	res.EgressFramesPerSec = round(float64(recv) / secs)
	res.LatencySamples, res.LatencyKept, res.LatencyExpected = n, len(all), expected
	p := nsPercentilesMS(all, 50, 90, 99)
	res.Latency = LatencyMS{P50: p[0], P90: p[1], P99: p[2], Max: round(float64(maxNS) / 1e6)}

	res.ErrorKinds = map[string]int64{}
	for i, k := range errKinds {
		v := r.errs[i].Load()
		res.ErrorKinds[k] = v
		res.Errors += v
	}
	r.errMu.Lock()
	res.ErrorSample = append([]string(nil), r.errShown...)
	r.errMu.Unlock()
}

// serverFigures derives the server's CPU, memory, GC pauses and counter
// deltas from the scrapes at the window's start and end.
func serverFigures(res *SyncResult, before, after *scrape, relay bool) {
	wall := after.at.Sub(before.at).Seconds()
	c0, ok0 := before.value("process_cpu_seconds_total")
	c1, ok1 := after.value("process_cpu_seconds_total")
	if ok0 && ok1 && wall > 0 {
		res.ServerCPU = round((c1 - c0) / wall)
	}
	if rss, ok := after.value("process_resident_memory_bytes"); ok {
		res.ServerRSSMB = round(rss / 1e6)
	}
	ps, maxV, n := histDeltaPercentiles(before.histogram("go_gc_pauses_seconds"), after.histogram("go_gc_pauses_seconds"), 50, 95, 99)
	res.GCPauses = n
	res.GCPause = PauseMS{P50: round(ps[0] * 1e3), P95: round(ps[1] * 1e3), P99: round(ps[2] * 1e3), Max: round(maxV * 1e3)}
	if !relay {
		ps, maxV, n := histDeltaPercentiles(before.histogram("rally_room_tick_seconds"), after.histogram("rally_room_tick_seconds"), 50, 95, 99)
		if n > 0 {
			res.ServerTickMS = &PauseMS{P50: round(ps[0] * 1e3), P95: round(ps[1] * 1e3), P99: round(ps[2] * 1e3), Max: round(maxV * 1e3)}
		}
	}
	res.ServerCounter = map[string]float64{}
	b := before.counters("rally_")
	for k, v := range after.counters("rally_") {
		if d := v - b[k]; d != 0 {
			res.ServerCounter[k] = round(d)
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// selfCPU is the CPU time this process has used (user and system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU reads the busy and total CPU time of the whole machine from
// /proc/stat, in clock ticks; zero where there is no such file.
func machineCPU() [2]uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return [2]uint64{}
	}
	var busy, total uint64
	for i, s := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return [2]uint64{busy, total}
}

// WriteTable prints the result for a terminal.
func (r *SyncResult) WriteTable(w io.Writer) {
	tick := ""
	if r.TickRateHz > 0 {
		tick = fmt.Sprintf(", %d Hz ticks", r.TickRateHz)
	}
	fmt.Fprintf(w, "sync: %s%s, %d clients in %d rooms of %d, %d B inputs at %g Hz (%.0f/s), %gs after %gs warmup\n",
		r.Mode, tick, r.Clients, r.Rooms, r.RoomSize, r.PayloadBytes, r.RateHz, r.TargetInputsPerSec, r.DurationS, r.WarmupS)
	fmt.Fprintf(w, "%10s %10s %8s %8s %8s %8s %8s\n", "ingress", "egress", "p50", "p90", "p99", "max", "errors")
	fmt.Fprintf(w, "%8.0f/s %8.0f/s %6.1fms %6.1fms %6.1fms %6.1fms %8d\n",
		r.IngressMsgsPerSec, r.EgressFramesPerSec, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.Errors)
	fmt.Fprintf(w, "%10s %10s %8s %8s %8s %8s %8s\n", "srv cpu", "srv rss", "gc p50", "gc p95", "gc p99", "gc max", "gen cpu")
	fmt.Fprintf(w, "%6.2fcore %8.1fMB %6.2fms %6.2fms %6.2fms %6.2fms %4.2fcore\n",
		r.ServerCPU, r.ServerRSSMB, r.GCPause.P50, r.GCPause.P95, r.GCPause.P99, r.GCPause.Max, r.LoadgenCPU)
	if r.MachineCPU > 0 {
		fmt.Fprintf(w, "machine: %.2f of %d cores busy (server %.2f, load generator %.2f, other %.2f)\n",
			r.MachineCPU, r.CPUs, r.ServerCPU, r.LoadgenCPU, max(r.MachineCPU-r.ServerCPU-r.LoadgenCPU, 0))
	}
	writeProblems(w, r.Errors, r.ErrorKinds, r.ErrorSample, r.MetricsError)
}
