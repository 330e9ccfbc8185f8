package main

// These tests run the real rally binary as a child process: start-up,
// probes, JetStream through the embedded server, signals, restarts and
// kill -9.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/rallyhq/rally/internal/launch"
)

var rallyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rally-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rallyBin = filepath.Join(dir, "rally")
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", rallyBin, ".")
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

// serveArgs runs on free ports with JSON logs, so the test learns the
// addresses from the log.
func serveArgs(dataDir string, extra ...string) []string {
	return append([]string{"serve", "--data-dir", dataDir, "--log-format", "json",
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0"}, extra...)
}

func start(t *testing.T, args []string, env ...string) (*launch.Process, launch.Addrs) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := launch.Start(context.Background(), rallyBin, args, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.Exited():
		default:
			p.Kill()
		}
		if t.Failed() {
			t.Logf("rally log:\n%s", p.Log())
		}
	})
	addrs, err := p.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p, addrs
}

func stop(t *testing.T, p *launch.Process) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := p.Stop(ctx)
	if err != nil {
		t.Fatalf("SIGTERM did not stop rally: %v", err)
	}
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func connectJS(t *testing.T, natsAddr string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect("nats://"+natsAddr, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestServeProbesJetStreamAndRestart(t *testing.T) {
	dir := t.TempDir()
	p, addrs := start(t, serveArgs(dir))
	base := "http://" + addrs.HTTP

	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d %s", code, body)
	}
	code, body := get(t, base+"/readyz")
	if code != 200 || !strings.Contains(body, `"nats":"ok"`) || !strings.Contains(body, `"store":"ok"`) {
		t.Fatalf("/readyz %d %s", code, body)
	}
	var version map[string]string
	if _, body := get(t, base+"/version"); json.Unmarshal([]byte(body), &version) != nil || version["node_id"] != addrs.NodeID || version["version"] == "" {
		t.Fatalf("/version %s (node %s)", body, addrs.NodeID)
	}
	_, metrics := get(t, base+"/metrics")
	for _, name := range []string{"go_gc_pauses_seconds_bucket", "process_cpu_seconds_total", "go_build_info", "rally_build_info", "go_goroutines"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	checkGRPC(t, addrs.GRPC)

	// Publish and consume through the embedded server's client listener, as
	// any external tool would.
	_, js := connectJS(t, addrs.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "E2E", Subjects: []string{"e2e.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := js.Publish(ctx, "e2e.msg", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	readAll(t, js, 100)

	stop(t, p)
	if !strings.Contains(p.Log(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in log:\n%s", p.Log())
	}

	// Same data dir: same node, same messages.
	_, addrs2 := start(t, serveArgs(dir))
	if addrs2.NodeID != addrs.NodeID {
		t.Fatalf("node id changed across restart: %s -> %s", addrs.NodeID, addrs2.NodeID)
	}
	_, js2 := connectJS(t, addrs2.NATS)
	readAll(t, js2, 100)
}

func readAll(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, "E2E", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if string(m.Data()) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, m.Data())
		}
		i++
	}
	if i != n {
		t.Fatalf("read %d of %d messages", i, n)
	}
}

func checkGRPC(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health: %v %v", resp, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "grpc.health.v1.Health") {
		t.Fatalf("reflection lists %v", names)
	}
}

// A message JetStream acknowledged is on disk before the ack: kill -9 in the
// middle of a publishing stream loses none of them.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	dir := t.TempDir()
	p, addrs := start(t, serveArgs(dir))
	_, js := connectJS(t, addrs.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CRASH", Subjects: []string{"crash.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}

	// Several publishers keep many publishes in flight; each records the
	// sequence the server acknowledged for its payload.
	var (
		mu    sync.Mutex
		acked = map[uint64]string{}
		wg    sync.WaitGroup
	)
	const killAfter = 3000
	killed := make(chan struct{})
	enough := make(chan struct{})
	var once sync.Once
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				payload := fmt.Sprintf("w%d-%d", w, i)
				ack, err := js.Publish(ctx, "crash.m", []byte(payload), jetstream.WithMsgID(payload))
				if err != nil {
					select {
					case <-killed:
						return // expected: the server is gone
					default:
						t.Errorf("publish before kill: %v", err)
						return
					}
				}
				mu.Lock()
				acked[ack.Sequence] = payload
				n := len(acked)
				mu.Unlock()
				if n >= killAfter {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("publishers too slow")
	}
	// Publishers are still running when the process dies.
	close(killed)
	p.Kill()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("acknowledged before kill -9: %d", len(acked))

	_, addrs2 := start(t, serveArgs(dir))
	_, js2 := connectJS(t, addrs2.NATS)
	stream, err := js2.Stream(ctx, "CRASH")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < uint64(len(acked)) {
		t.Fatalf("stream holds %d messages, %d were acknowledged", info.State.Msgs, len(acked))
	}
	for seq, payload := range acked {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("acknowledged seq %d lost: %v", seq, err)
		}
		if string(m.Data) != payload {
			t.Fatalf("seq %d = %q, want %q", seq, m.Data, payload)
		}
	}
}

// The first signal makes /readyz 503 while the drain delay runs; a second
// signal exits at once instead of waiting it out.
func TestShutdownGoesNotReadyFirstAndSecondSignalExits(t *testing.T) {
	p, addrs := start(t, serveArgs(t.TempDir()), "RALLY_SHUTDOWN_DRAIN_DELAY=60s", "RALLY_SHUTDOWN_TIMEOUT=90s")
	base := "http://" + addrs.HTTP
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.WaitLog(ctx, "draining"); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("/readyz during drain: %d %s", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz during drain: %d", code)
	}
	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("grpc health during drain: %v %v", resp, err)
	}

	begin := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx) // far less than the 60 s drain delay
	if err != nil {
		t.Fatalf("second signal did not exit: %v", err)
	}
	if code != 130 {
		t.Fatalf("exit code %d, want 130", code)
	}
	t.Logf("exited %s after the second signal", time.Since(begin))
}

// An external NATS URL takes the same code path: the second node keeps no
// JetStream files of its own and is ready through the first node's server.
func TestExternalNATS(t *testing.T) {
	_, a := start(t, serveArgs(t.TempDir()))
	dirB := t.TempDir()
	pb, b := start(t, serveArgs(dirB, "--nats-url", "nats://"+a.NATS))
	if b.NATS != "" {
		t.Fatalf("external-NATS node reports an embedded listener %q", b.NATS)
	}
	if code, body := get(t, "http://"+b.HTTP+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(dirB, "jetstream")); !os.IsNotExist(err) {
		t.Fatalf("external-NATS node created JetStream files: %v", err)
	}
	stop(t, pb)
}

func TestBadConfigExitsWithOneLineAndCreatesNothing(t *testing.T) {
	tmp := t.TempDir()
	badYAML := filepath.Join(tmp, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("http:\n  addr: 127.0.0.1:0\n  adr: oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	aFile := filepath.Join(tmp, "afile")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown key", []string{"--config", badYAML}, nil, `unknown key "http.adr"`},
		{"bad port", []string{"--http-addr", "127.0.0.1:70000"}, nil, "http.addr"},
		{"bad env value", nil, []string{"RALLY_SHUTDOWN_TIMEOUT=later"}, "shutdown.timeout"},
		{"data dir is a file", []string{"--data-dir", aFile}, nil, "data_dir"},
		{"data dir under a file", []string{"--data-dir", filepath.Join(aFile, "data")}, nil, "data_dir"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(tmp, "data-"+strings.ReplaceAll(tc.name, " ", "-"))
			args := append([]string{"serve", "--data-dir", data, "--http-addr", "127.0.0.1:0",
				"--grpc-addr", "127.0.0.1:0", "--nats-addr", "off"}, tc.args...)
			cmd := exec.Command(rallyBin, args...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.HasPrefix(lines[0], "rally: config:") {
				t.Fatalf("want one line naming %q, got:\n%s", tc.want, out)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Fatalf("data dir created despite bad config: %v", err)
			}
		})
	}
}

// A busy port is reported before anything is created on disk.
func TestBusyPortFailsBeforeCreatingData(t *testing.T) {
	_, a := start(t, serveArgs(t.TempDir()))
	data := filepath.Join(t.TempDir(), "data")
	out, err := exec.Command(rallyBin, "serve", "--data-dir", data, "--http-addr", a.HTTP,
		"--grpc-addr", "127.0.0.1:0", "--nats-addr", "off", "--log-format", "json").CombinedOutput()
	if err == nil {
		t.Fatalf("started on a busy port:\n%s", out)
	}
	if !strings.Contains(string(out), "address already in use") {
		t.Fatalf("unclear error:\n%s", out)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("data dir created: %v", err)
	}
}

func TestConfigPrintShowsEffectiveConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rally.yaml")
	if err := os.WriteFile(file, []byte("http:\n  addr: 127.0.0.1:1111\ngrpc:\n  addr: 127.0.0.1:2222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rallyBin, "config", "print", "--config", file, "--http-addr", "127.0.0.1:3333")
	cmd.Env = append(os.Environ(), "RALLY_NATS_ADDR=off", "RALLY_GRPC_ADDR=127.0.0.1:4444")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"addr: 127.0.0.1:3333", "addr: 127.0.0.1:4444", "addr: \"off\"", "driver: bolt"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchColdstartWritesJSON(t *testing.T) {
	out := filepath.Join(t.TempDir(), "coldstart.json")
	cmd := exec.Command(rallyBin, "bench", "coldstart", "--runs", "3", "--binary", rallyBin, "--match", "--json", out)
	table, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, table)
	}
	if !strings.Contains(string(table), "p99") {
		t.Fatalf("no table:\n%s", table)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Samples []float64 `json:"samples_ms"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	// Field names are part of the contract: decode them by their JSON names.
	var names map[string]any
	_ = json.Unmarshal(raw, &names)
	for _, k := range []string{"runs", "min_ms", "p50_ms", "p90_ms", "p99_ms"} {
		if _, ok := names[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, raw)
		}
	}
	if names["runs"] != float64(3) || len(res.Samples) != 3 {
		t.Fatalf("runs %v samples %v", names["runs"], res.Samples)
	}
	minMS, p99 := names["min_ms"].(float64), names["p99_ms"].(float64)
	if minMS <= 0 || p99 < minMS {
		t.Fatalf("min %v p99 %v", minMS, p99)
	}
	// The first pair is matched after the server is ready.
	if fm, ok := names["first_match_ms"].(map[string]any); !ok || fm["min"].(float64) < minMS {
		t.Errorf("first_match_ms: %v", names["first_match_ms"])
	}
}
