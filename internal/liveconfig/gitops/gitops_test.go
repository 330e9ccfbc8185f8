package gitops

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rallyhq/rally/internal/bus"
	"github.com/rallyhq/rally/internal/liveconfig"
	"github.com/rallyhq/rally/internal/liveconfig/gitsource"
)

var quiet = slog.New(slog.DiscardHandler)

// origin is a bare repository fed by pushes from a working clone.
type origin struct {
	t    *testing.T
	bare string
	work *git.Repository
	dir  string
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	main := git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")}
	bare := filepath.Join(t.TempDir(), "config.git")
	if _, err := git.PlainInitWithOptions(bare, &git.PlainInitOptions{Bare: true, InitOptions: main}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "work")
	work, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: main})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := work.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{bare}}); err != nil {
		t.Fatal(err)
	}
	return &origin{t: t, bare: bare, work: work, dir: dir}
}

func (o *origin) push(msg, path, body string) string {
	o.t.Helper()
	wt, err := o.work.Worktree()
	if err != nil {
		o.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(o.dir, path), []byte(body), 0o644); err != nil {
		o.t.Fatal(err)
	}
	if _, err := wt.Add(path); err != nil {
		o.t.Fatal(err)
	}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: &object.Signature{Name: "t", Email: "t@example.com", When: time.Now()}})
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.work.Push(&git.PushOptions{RemoteName: "origin"}); err != nil {
		o.t.Fatal(err)
	}
	return h.String()
}

// node is one Rally node's share: its own NATS connection, Live and
// Syncer.
type node struct {
	live   *liveconfig.Live
	ch     *Channel
	syncer *Syncer
}

func newNode(t *testing.T, natsURL, name, repo string) *node {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Options{URL: natsURL, ConnectTimeout: 10 * time.Second, Name: name, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return attach(t, b, name, repo)
}

func attach(t *testing.T, b *bus.Bus, name, repo string) *node {
	t.Helper()
	ctx := context.Background()
	ch, err := OpenChannel(ctx, b.JetStream(), "TEST_LIVECONFIG")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{live: liveconfig.New(liveconfig.LiveOptions{Log: quiet}), ch: ch}
	stop, err := ch.Follow(ctx, n.live)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	n.syncer = NewSyncer(ch, n.live, SyncOptions{
		Git: gitsource.Options{URL: repo, Branch: "main"}, Node: name, Registerer: prometheus.NewRegistry(), Log: quiet,
	})
	return n
}

func waitVersion(t *testing.T, n *node, version string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		changed := n.live.Changed()
		if n.live.Current().Version() == version {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("version %.12s not live within %s (live: %.12s)", version, within, n.live.Current().Version())
		}
	}
}

func TestLiveCommitsConvergeOnEveryNodeAndBadCommitsNowhere(t *testing.T) {
	repo := newOrigin(t)
	c1 := repo.push("first", "eco.yaml", "values:\n  gold: 1\n")

	embedded, err := bus.Open(context.Background(), bus.Options{
		ListenAddr: "127.0.0.1:0", StoreDir: t.TempDir(), ConnectTimeout: 10 * time.Second, Name: "a", Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = embedded.Close(ctx)
	})
	a := attach(t, embedded, "a", repo.bare)
	b := newNode(t, "nats://"+embedded.ListenAddr(), "b", "file://"+repo.bare)
	ctx := context.Background()

	if v, err := a.syncer.Sync(ctx); err != nil || v != c1 {
		t.Fatalf("first sync: %q %v", v, err)
	}
	waitVersion(t, a, c1, 2*time.Second)
	waitVersion(t, b, c1, 2*time.Second)
	if a.live.Current().Source() != Source {
		t.Fatalf("source %q", a.live.Current().Source())
	}

	// A bad commit is refused whole by the node that fetched it: never
	// published, so no node runs it.
	bad := repo.push("bad", "eco.yaml", "values:\n  gold: 2\nexperiments:\n  - id: x\n    variants: [{name: a, weight: 50}]\n")
	if v, err := b.syncer.Sync(ctx); err == nil || v != c1 {
		t.Fatalf("sync of a bad commit: %q %v", v, err)
	}
	h := b.live.History()
	if last := h[len(h)-1]; last.Outcome != "rejected" || last.Version != bad ||
		!strings.Contains(strings.Join(last.Problems, "\n"), "weights add up to 50%") {
		t.Fatalf("history after a bad commit: %+v", last)
	}
	if p, _, err := a.ch.Current(ctx); err != nil || p.Version != c1 {
		t.Fatalf("published after a bad commit: %v %v", p, err)
	}
	// Asking again does not report the same commit again.
	if _, err := b.syncer.Sync(ctx); err == nil || len(b.live.History()) != len(h) {
		t.Fatal("a refused commit was reconsidered")
	}

	// The fix, pushed and picked up by polling on node b only: node a
	// converges through NATS.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.syncer.Run(runCtx, 50*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	pushed := time.Now()
	c3 := repo.push("fix", "eco.yaml", "values:\n  gold: 3\n")
	waitVersion(t, b, c3, 2*time.Second)
	waitVersion(t, a, c3, 2*time.Second)
	t.Logf("push -> live on both nodes: %s (poll every 50ms)", time.Since(pushed))

	// A trigger (the webhook) syncs at once.
	pushed = time.Now()
	c4 := repo.push("more", "eco.yaml", "values:\n  gold: 4\n")
	b.syncer.Trigger()
	waitVersion(t, a, c4, 2*time.Second)
	t.Logf("push + trigger -> live on the other node: %s", time.Since(pushed))

	hist, err := a.ch.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, e := range hist {
		versions = append(versions, e.Version)
	}
	if got, want := strings.Join(versions, ","), strings.Join([]string{c1, c3, c4}, ","); got != want {
		t.Fatalf("published history %s, want %s", got, want)
	}
	if hist[0].Node != "a" || hist[1].Node != "b" || hist[1].Message != "fix" {
		t.Fatalf("history entries %+v", hist)
	}
}

// A node that joins later starts on the cluster's version before it even
// reaches Git.
func TestLiveLateNodeStartsOnThePublishedVersion(t *testing.T) {
	repo := newOrigin(t)
	c1 := repo.push("first", "eco.yaml", "values:\n  gold: 1\n")
	embedded, err := bus.Open(context.Background(), bus.Options{
		ListenAddr: "off", StoreDir: t.TempDir(), ConnectTimeout: 10 * time.Second, Name: "a", Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = embedded.Close(ctx)
	})
	a := attach(t, embedded, "a", repo.bare)
	if _, err := a.syncer.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	late := attach(t, embedded, "late", filepath.Join(t.TempDir(), "unreachable"))
	if late.live.Current().Version() != c1 {
		t.Fatalf("late node has %q before any fetch, want %s", late.live.Current().Version(), c1)
	}
	if _, err := late.syncer.Sync(context.Background()); err == nil {
		t.Fatal("sync from an unreachable repository succeeded")
	}
	if late.live.Current().Version() != c1 {
		t.Fatal("a failed fetch changed the live version")
	}
}
