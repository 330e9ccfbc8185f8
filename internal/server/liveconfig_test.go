package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	configv1 "github.com/rallyhq/rally/api/proto/rally/config/v1"
	"github.com/rallyhq/rally/internal/liveconfig"
	"github.com/rallyhq/rally/sdk/go/rally"
)

func writeLiveDoc(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Live config over the socket (SDK GetConfig and WatchConfig, binary and
// JSON) and through the Go API server code uses, on one node watching a
// directory.
func TestLiveConfigOverTheSocketAndGoAPI(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "game.yaml")
	writeLiveDoc(t, doc, `values:
  speed: 1
  name: arena
experiments:
  - id: fast
    variants:
      - {name: fast, weight: 50, values: {game.speed: 2}}
      - {name: normal, weight: 50}
`)
	cfg := testConfig(t)
	cfg.LiveConfig.Source, cfg.LiveConfig.Dir, cfg.LiveConfig.Debounce = "dir", dir, 20*time.Millisecond
	s := startServer(t, cfg)
	t.Cleanup(func() { shutdown(t, s) }) // after the players close (cleanups run last first)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, json := range []bool{false, true} {
		name := map[bool]string{false: "cfgbin", true: "cfgjson"}[json]
		c := player(t, s, name, rally.Options{JSON: json})
		got, err := c.GetConfig(ctx, &configv1.PlayerAttributes{Region: "eu"}, "game")
		if err != nil {
			t.Fatalf("%s: GetConfig: %v", name, err)
		}
		// Server code sees what the player sees.
		view := s.LiveConfig().Resolve(liveconfig.Player{ID: c.UserID(), Region: "eu"})
		variant, _ := view.Variant("fast")
		if got.GetVersion() != view.Version() || got.GetValues()["game.speed"].GetNumberValue() != view.Float("game.speed", 0) ||
			len(got.GetAssignments()) != 1 || got.GetAssignments()[0].GetVariant() != variant {
			t.Fatalf("%s: socket %v, Go API version %s speed %v variant %s", name, got, view.Version(), view.Float("game.speed", 0), variant)
		}
	}

	c := player(t, s, "cfgwatch", rally.Options{})
	pushes := make(chan *configv1.Config, 8)
	streamErr := make(chan error, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	go func() {
		streamErr <- c.WatchConfig(wctx, nil, func(cfg *configv1.Config) { pushes <- cfg }, "game.name")
	}()
	next := func(what string) *configv1.Config {
		select {
		case cfg := <-pushes:
			return cfg
		case err := <-streamErr:
			t.Fatalf("%s: stream ended: %v", what, err)
		case <-ctx.Done():
			t.Fatalf("%s: no push", what)
		}
		return nil
	}
	if first := next("first push"); first.GetValues()["game.name"].GetStringValue() != "arena" || len(first.GetValues()) != 1 {
		t.Fatalf("first push %v", first)
	}
	edited := time.Now()
	writeLiveDoc(t, doc, "values:\n  speed: 1\n  name: jungle\n")
	if pushed := next("push after edit"); pushed.GetValues()["game.name"].GetStringValue() != "jungle" || len(pushed.GetAssignments()) != 0 {
		t.Fatalf("push after edit %v", pushed)
	}
	t.Logf("edit -> pushed over the socket: %s (debounce 20ms)", time.Since(edited))
	if got := gauge(t, s, "rally_liveconfig_watchers"); got != 1 {
		t.Fatalf("watchers gauge %v", got)
	}
	stopWatch()
	if err := <-streamErr; err != context.Canceled {
		t.Fatalf("watch ended with %v", err)
	}
	eventually(t, 5*time.Second, "watch ends on the server", func() (bool, string) {
		n := gauge(t, s, "rally_liveconfig_watchers")
		return n == 0, fmt.Sprint(n, " watchers")
	})
}
