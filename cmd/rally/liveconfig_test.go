package main

// End-to-end tests of live config on the real binary: hot reload under a
// running server, assignment across processes, and a Git branch converged
// on two nodes sharing one NATS.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	"github.com/rallyhq/rally/internal/liveconfig"
)

// lcClient is a logged-in player's ConfigService client on one node.
type lcClient struct {
	configv1.ConfigServiceClient
	token string
}

func (c lcClient) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

func lcLogin(t *testing.T, httpAddr, grpcAddr, device string) lcClient {
	t.Helper()
	resp, err := http.Post("http://"+httpAddr+"/v1/auth/device", "application/json",
		strings.NewReader(fmt.Sprintf(`{"id":%q,"create":true}`, device)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sess struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sess); err != nil || sess.Token == "" {
		t.Fatalf("login: %d %v", resp.StatusCode, err)
	}
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return lcClient{configv1.NewConfigServiceClient(cc), sess.Token}
}

// lcWrite saves a file as editors do: a temporary file renamed over it.
func lcWrite(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func copyExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := liveconfig.ReadDir("../../examples/liveconfig")
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range files {
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pair is a document whose two keys must always hold the same generation:
// a response mixing two versions would show it.
func pair(gen int) string {
	return fmt.Sprintf("values:\n  left: %d\n  right: %d\n", gen, gen)
}

const pairSchema = `{"type":"object","required":["left","right"],"properties":{"left":{"type":"integer","minimum":0},"right":{"type":"integer","minimum":0}}}`

func TestLiveConfigHotReloadUnderRunningServer(t *testing.T) {
	dir := copyExamples(t)
	pairFile := filepath.Join(dir, "pair.yaml")
	lcWrite(t, pairFile, pair(0))
	lcWrite(t, filepath.Join(dir, "pair.schema.json"), pairSchema)
	_, addrs := start(t, serveArgs(t.TempDir()), "RALLY_LIVECONFIG_SOURCE=dir", "RALLY_LIVECONFIG_DIR="+dir)
	client := lcLogin(t, addrs.HTTP, addrs.GRPC, "device-liveconfig-1")
	ctx, cancel := context.WithTimeout(client.ctx(context.Background()), 60*time.Second)
	defer cancel()

	get := func() *configv1.Config {
		cfg, err := client.GetConfig(ctx, &configv1.GetConfigRequest{Keys: []string{"pair", "economy"}})
		if err != nil {
			t.Error(err)
			return nil
		}
		return cfg
	}
	gen := func(cfg *configv1.Config) int { return int(cfg.GetValues()["pair.left"].GetNumberValue()) }
	if cfg := get(); cfg == nil || gen(cfg) != 0 || cfg.GetValues()["economy.daily_bonus"].GetNumberValue() != 50 {
		t.Fatalf("initial config %v", cfg)
	}

	// Readers hammer GetConfig through every swap below.
	var stopReaders atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	readerErr := make(chan error, 4)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			byVersion := map[string]int{}
			for !stopReaders.Load() {
				cfg, err := client.GetConfig(ctx, &configv1.GetConfigRequest{Keys: []string{"pair"}})
				if err != nil {
					readerErr <- err
					return
				}
				l, r := cfg.GetValues()["pair.left"].GetNumberValue(), cfg.GetValues()["pair.right"].GetNumberValue()
				if l != r {
					readerErr <- fmt.Errorf("torn config: left %v right %v in version %s", l, r, cfg.GetVersion())
					return
				}
				if prev, ok := byVersion[cfg.GetVersion()]; ok && prev != int(l) {
					readerErr <- fmt.Errorf("version %s served generations %d and %v", cfg.GetVersion(), prev, l)
					return
				}
				byVersion[cfg.GetVersion()] = int(l)
				reads.Add(1)
			}
		}()
	}

	// A watcher is pushed each change.
	watch, err := client.Watch(ctx, &configv1.WatchRequest{Keys: []string{"pair"}})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || gen(first) != 0 {
		t.Fatalf("first watch push %v %v", first, err)
	}

	var delays []time.Duration
	for g := 1; g <= 10; g++ {
		edited := time.Now()
		lcWrite(t, pairFile, pair(g))
		deadline := edited.Add(time.Second)
		for {
			cfg := get()
			if cfg != nil && gen(cfg) == g {
				delays = append(delays, time.Since(edited))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("generation %d not served within 1 s of the edit", g)
			}
			time.Sleep(2 * time.Millisecond) // polling the server with a deadline
		}
		pushed, err := watch.Recv()
		if err != nil || gen(pushed) > g || gen(pushed) < g-1 {
			t.Fatalf("watch push after generation %d: %v %v", g, pushed, err)
		}
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	t.Logf("edit -> served (debounce 100ms): min %s median %s max %s over %d edits",
		delays[0], delays[len(delays)/2], delays[len(delays)-1], len(delays))

	// A broken edit is refused and the old value keeps being served.
	lcWrite(t, pairFile, "values:\n  left: -1\n  right: -1\n")
	waitRejected(t, addrs.HTTP, "pair.yaml: /values/left: minimum: got -1, want 0")
	if cfg := get(); cfg == nil || gen(cfg) != 10 {
		t.Fatalf("after a broken edit: %v", cfg)
	}
	lcWrite(t, filepath.Join(dir, "economy.yaml"), "values: [not, an, object]\n")
	waitRejected(t, addrs.HTTP, "economy.yaml: /values: got array, want object")
	if cfg := get(); cfg == nil || gen(cfg) != 10 || cfg.GetValues()["economy.daily_bonus"].GetNumberValue() != 50 {
		t.Fatalf("after a second broken edit: %v", cfg)
	}

	stopReaders.Store(true)
	wg.Wait()
	close(readerErr)
	for err := range readerErr {
		t.Fatal(err)
	}
	t.Logf("%d GetConfig calls during 10 swaps and 2 refusals, none torn", reads.Load())

	_, metrics := getURL(t, "http://"+addrs.HTTP+"/metrics")
	for _, want := range []string{`rally_liveconfig_reloads_total{source="dir"} 11`, `rally_liveconfig_rejects_total{source="dir"} 2`,
		"rally_liveconfig_propagation_seconds_bucket", "rally_liveconfig_watchers 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_, cur := getURL(t, "http://"+addrs.HTTP+"/admin/liveconfig")
	if !strings.Contains(cur, `"id": "double_gold"`) || !strings.Contains(cur, `"source": "dir"`) {
		t.Errorf("/admin/liveconfig: %s", cur)
	}
}

func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	return get(t, url)
}

// waitRejected waits for a refusal naming problem in the admin history.
func waitRejected(t *testing.T, httpAddr, problem string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_, body := get(t, "http://"+httpAddr+"/admin/liveconfig/history")
		if strings.Contains(body, `"outcome": "rejected"`) && strings.Contains(body, problem) {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling the server with a deadline
	}
	_, body := get(t, "http://"+httpAddr+"/admin/liveconfig/history")
	t.Fatalf("no rejection naming %q; history:\n%s", problem, body)
}

// splitDir is a configuration with a 10/90 (or other) experiment.
func splitDir(t *testing.T, treatment, control int) string {
	t.Helper()
	dir := t.TempDir()
	lcWrite(t, filepath.Join(dir, "game.yaml"), fmt.Sprintf(`values:
  reward: 1
experiments:
  - id: split
    variants:
      - {name: treatment, weight: %d, values: {game.reward: 2}}
      - {name: control, weight: %d}
`, treatment, control))
	return dir
}

func runAssign(t *testing.T, dir string, ids []byte) []byte {
	t.Helper()
	cmd := exec.Command(rallyBin, "config", "assign", dir, "--experiment", "split")
	cmd.Stdin = bytes.NewReader(ids)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rally config assign: %v\n%s", err, stderr.String())
	}
	return out
}

// 100k players split 10/90 by two separate rally processes and this one:
// identical, within half a point, and sticky when the split moves to 20/80.
func TestLiveConfigExperimentAssignmentAcrossProcesses(t *testing.T) {
	const n = 100000
	var ids bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&ids, "%08x-%04x-player\n", i*2654435761%4294967296, i%65536)
	}
	dir10 := splitDir(t, 10, 90)
	var outs [2][]byte
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() { defer wg.Done(); outs[i] = runAssign(t, dir10, ids.Bytes()) }()
	}
	wg.Wait()
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two rally processes assigned the same players differently")
	}
	parse := func(out []byte) map[string]string {
		m := make(map[string]string, n)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 3 || f[1] != "split" {
				t.Fatalf("bad line %q", line)
			}
			m[f[0]] = f[2]
		}
		if len(m) != n {
			t.Fatalf("%d players assigned, want %d", len(m), n)
		}
		return m
	}
	before := parse(outs[0])

	// This test process agrees too.
	files, err := liveconfig.ReadDir(dir10)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := liveconfig.Build(files, liveconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for id, v := range before {
		if got, _ := snap.Resolve(liveconfig.Player{ID: id}, time.Now()).Variant("split"); got != v {
			t.Fatalf("%s: %s in the binary, %s here", id, v, got)
		}
		count[v]++
	}
	share := float64(count["treatment"]) * 100 / n
	t.Logf("10/90 over %d players: treatment %.3f%%, control %.3f%%", n, share, float64(count["control"])*100/n)
	if math.Abs(share-10) > 0.5 {
		t.Fatalf("treatment share %.3f%%, want 10 ± 0.5", share)
	}

	after := parse(runAssign(t, splitDir(t, 20, 80), ids.Bytes()))
	treated := 0
	for id, v := range before {
		if v == "treatment" && after[id] != "treatment" {
			t.Fatalf("%s left treatment when it grew to 20%%", id)
		}
		if after[id] == "treatment" {
			treated++
		}
	}
	share = float64(treated) * 100 / n
	t.Logf("20/80: treatment %.3f%%; every player of the first 10%% kept", share)
	if math.Abs(share-20) > 0.5 {
		t.Fatalf("treatment share %.3f%% after 20/80", share)
	}
}

func TestLiveConfigValidateAndDiffCommands(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(rallyBin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := run("config", "validate", "../../examples/liveconfig"); code != 0 || !strings.HasPrefix(out, "ok: 3 documents, 8 keys, 1 experiments, 1 releases") {
		t.Fatalf("validate examples: %d %q %q", code, out, errOut)
	}
	bad := copyExamples(t)
	lcWrite(t, filepath.Join(bad, "economy.yaml"), "values:\n  gold_per_win: -3\n  daily_bonus: 50\n  shop: {discount: 0}\n")
	lcWrite(t, filepath.Join(bad, "features.yaml"), "values:\n  new_shop: maybe\n")
	code, _, errOut := run("config", "validate", bad)
	if code != 1 || !strings.Contains(errOut, "economy.yaml: /values/gold_per_win: minimum: got -3, want 0\n") ||
		!strings.Contains(errOut, "features.yaml: /values/new_shop: got string, want boolean\n") {
		t.Fatalf("validate broken dir: exit %d\n%s", code, errOut)
	}

	// rally serve refuses to start on an invalid directory, naming the problem.
	serve := exec.Command(rallyBin, serveArgs(t.TempDir())...)
	serve.Env = append(os.Environ(), "RALLY_LIVECONFIG_SOURCE=dir", "RALLY_LIVECONFIG_DIR="+bad)
	served, err := serve.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(served), "economy.yaml: /values/gold_per_win: minimum: got -3, want 0 (and 1 more)") {
		t.Fatalf("serve on an invalid directory: %v\n%s", err, served)
	}

	if code, out, _ := run("config", "diff", "../../examples/liveconfig", copyExamples(t)); code != 0 || !strings.Contains(out, "no differences") {
		t.Fatalf("diff of copies: %d %s", code, out)
	}
	code, out, errOut := run("config", "diff", splitDir(t, 10, 90), splitDir(t, 20, 80))
	if code != 1 || !strings.Contains(out, "~ experiment split: variants treatment 10%, control 90% -> treatment 20%, control 80%; 10% of players change variant") {
		t.Fatalf("diff 10/90 -> 20/80: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := run("config", "diff", "../../examples/liveconfig", bad); code != 2 || !strings.Contains(errOut, "gold_per_win") {
		t.Fatalf("diff against an invalid dir: exit %d %s", code, errOut)
	}
}

// gitOrigin is a bare repository fed by pushes from a working clone, both
// made with go-git.
type gitOrigin struct {
	t    *testing.T
	bare string
	work *git.Repository
	dir  string
}

func newGitOrigin(t *testing.T) *gitOrigin {
	t.Helper()
	main := git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")}
	bare := filepath.Join(t.TempDir(), "config.git")
	if _, err := git.PlainInitWithOptions(bare, &git.PlainInitOptions{Bare: true, InitOptions: main}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	work, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: main})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := work.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{bare}}); err != nil {
		t.Fatal(err)
	}
	return &gitOrigin{t: t, bare: bare, work: work, dir: dir}
}

func (o *gitOrigin) push(msg string, files map[string]string) string {
	o.t.Helper()
	wt, err := o.work.Worktree()
	if err != nil {
		o.t.Fatal(err)
	}
	for p, body := range files {
		full := filepath.Join(o.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			o.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			o.t.Fatal(err)
		}
		if _, err := wt.Add(p); err != nil {
			o.t.Fatal(err)
		}
	}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: &object.Signature{Name: "designer", Email: "d@example.com", When: time.Now()}})
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.work.Push(&git.PushOptions{RemoteName: "origin"}); err != nil {
		o.t.Fatal(err)
	}
	return h.String()
}

// waitServed polls GetConfig on every node until each serves version,
// and returns how long that took.
func waitServed(t *testing.T, since time.Time, version string, within time.Duration, nodes ...lcClient) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for i, c := range nodes {
		for {
			cfg, err := c.GetConfig(c.ctx(ctx), &configv1.GetConfigRequest{Keys: []string{"economy.gold_per_win"}})
			if err == nil && cfg.GetVersion() == version {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %d does not serve %.12s within %s (serves %.12s, err %v)", i, version, within, cfg.GetVersion(), err)
			}
			time.Sleep(2 * time.Millisecond) // polling the servers with a deadline
		}
	}
	return time.Since(since)
}

// Two rally processes on one NATS follow a Git branch: a pushed commit is
// live on both within 2 s, whichever node fetches it, and a bad commit on
// neither.
func TestLiveConfigGitTwoNodesConverge(t *testing.T) {
	repo := newGitOrigin(t)
	files, err := liveconfig.ReadDir("../../examples/liveconfig")
	if err != nil {
		t.Fatal(err)
	}
	initial := map[string]string{}
	for p, b := range files {
		initial["config/"+p] = string(b)
	}
	c1 := repo.push("initial config", initial)
	git := []string{"RALLY_LIVECONFIG_SOURCE=git", "RALLY_LIVECONFIG_GIT_URL=" + repo.bare, "RALLY_LIVECONFIG_GIT_PATH=config"}

	// Node a polls every 250 ms; node b never polls, it fetches only when
	// its webhook is called, and otherwise learns versions through NATS.
	_, a := start(t, serveArgs(t.TempDir()), append(git, "RALLY_LIVECONFIG_GIT_POLL_INTERVAL=250ms")...)
	_, b := start(t, serveArgs(t.TempDir(), "--nats-url", "nats://"+a.NATS), append(git, "RALLY_LIVECONFIG_GIT_POLL_INTERVAL=0s",
		"RALLY_LIVECONFIG_GIT_WEBHOOK_SECRET=s3cret")...)
	na := lcLogin(t, a.HTTP, a.GRPC, "device-git-a")
	nb := lcLogin(t, b.HTTP, b.GRPC, "device-git-b")
	waitServed(t, time.Now(), c1, 5*time.Second, na, nb)

	economy := func(gold int) map[string]string {
		return map[string]string{"config/economy.yaml": strings.Replace(string(files["economy.yaml"]), "gold_per_win: 100", fmt.Sprintf("gold_per_win: %d", gold), 1)}
	}

	// Fetched by a's poll; b converges through NATS.
	pushed := time.Now()
	c2 := repo.push("more gold", economy(120))
	viaPoll := waitServed(t, pushed, c2, 2*time.Second, na, nb)

	// Fetched by b on its webhook; a converges through NATS.
	pushed = time.Now()
	c3 := repo.push("even more gold", economy(130))
	req, _ := http.NewRequest("POST", "http://"+b.HTTP+"/hooks/liveconfig/git", strings.NewReader(`{"ref":"refs/heads/main"}`))
	req.Header.Set("X-Gitlab-Token", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
	viaWebhook := waitServed(t, pushed, c3, 2*time.Second, nb, na)
	t.Logf("push -> served on both nodes: %s via a's 250ms poll, %s via b's webhook", viaPoll, viaWebhook)

	unsigned, err := http.Post("http://"+b.HTTP+"/hooks/liveconfig/git", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	unsigned.Body.Close()
	if unsigned.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unsigned webhook: %d", unsigned.StatusCode)
	}

	// A bad commit is refused whole: a reports it, neither node runs it.
	bad := repo.push("broken", map[string]string{
		"config/economy.yaml":  strings.Replace(string(files["economy.yaml"]), "weight: 90", "weight: 95", 1),
		"config/features.yaml": "values:\n  new_shop: true\n  chat_filter: strict\n",
	})
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, hist := get(t, "http://"+a.HTTP+"/admin/liveconfig/history")
		if strings.Contains(hist, bad) && strings.Contains(hist, "weights add up to 105%") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a did not refuse %s:\n%s", bad, hist)
		}
		time.Sleep(20 * time.Millisecond) // polling the server with a deadline
	}
	for i, c := range []lcClient{na, nb} {
		cfg, err := c.GetConfig(c.ctx(context.Background()), &configv1.GetConfigRequest{})
		if err != nil || cfg.GetVersion() != c3 || cfg.GetValues()["features.new_shop"].GetBoolValue() {
			t.Fatalf("node %d after a bad commit: version %.12s err %v", i, cfg.GetVersion(), err)
		}
	}
	// diff between revisions, from the working clone and from the bare one.
	for _, args := range [][]string{{"--repo", repo.dir, "HEAD~2", "HEAD~1"}, {"--repo", repo.bare, "main~2", "main~1"}} {
		cmd := exec.Command(rallyBin, append([]string{"config", "diff", "--path", "config"}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
			!strings.Contains(string(out), "version "+c2+" -> "+c3+"\n~ value economy.gold_per_win: 120 -> 130\n") {
			t.Fatalf("config diff %v: %v\n%s", args, err, out)
		}
	}

	// A node that cannot reach Git still starts, on the cluster's version.
	_, c := start(t, serveArgs(t.TempDir(), "--nats-url", "nats://"+a.NATS), "RALLY_LIVECONFIG_SOURCE=git",
		"RALLY_LIVECONFIG_GIT_URL="+filepath.Join(t.TempDir(), "unreachable.git"), "RALLY_LIVECONFIG_GIT_POLL_INTERVAL=0s")
	waitServed(t, time.Now(), c3, 2*time.Second, lcLogin(t, c.HTTP, c.GRPC, "device-git-c"))

	_, cur := get(t, "http://"+b.HTTP+"/admin/liveconfig")
	if !strings.Contains(cur, `"version": "`+c3+`"`) || !strings.Contains(cur, `"message": "even more gold"`) {
		t.Fatalf("/admin/liveconfig on b:\n%s", cur)
	}
	_, metrics := get(t, "http://"+a.HTTP+"/metrics")
	for _, want := range []string{`rally_liveconfig_rejects_total{source="git"} 1`, `rally_liveconfig_propagation_seconds_count{source="git"}`,
		`rally_liveconfig_git_fetches_total{outcome="ok"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics of a lacks %s", want)
		}
	}
}
