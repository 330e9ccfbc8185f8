package gameserver

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Local mode runs the same state machine with no cluster.
func TestLocalModeTransitions(t *testing.T) {
	t.Setenv(EnvLocal, "1")
	s, err := New(Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := startWatch(t, s)
	w.next(t, Starting)
	if err := s.Allocate(ctx); !errors.Is(err, ErrTransition) {
		t.Fatalf("Allocate while Starting: %v", err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	w.next(t, Ready)
	if err := s.SetLabel(ctx, "mode", "ctf"); err != nil {
		t.Fatal(err)
	}
	if err := s.Allocate(ctx); err != nil {
		t.Fatal(err)
	}
	gs := w.next(t, Allocated)
	if gs.Labels["mode"] != "ctf" || gs.AllocatedAt.IsZero() {
		t.Fatalf("allocated: %+v", gs)
	}
	if err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := s.GameServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur.LastHealth.IsZero() || cur.Name != "local" || cur.Namespace != "default" {
		t.Fatalf("after a ping: %+v", cur)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	w.next(t, Shutdown)
	if err := s.Ready(ctx); !errors.Is(err, ErrTransition) {
		t.Fatalf("Ready after Shutdown: %v", err)
	}
}

// With a file, the state is written there, and an edit of the file plays
// the allocator: Watch delivers the allocation and its metadata.
func TestLocalFileStateAndEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gameserver.json")
	t.Setenv(EnvLocal, path)
	s, err := New(Options{Name: "dev-0", LocalPoll: 5 * time.Millisecond, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	var onDisk GameServer
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &onDisk); err != nil {
		t.Fatal(err)
	}
	if onDisk.State != Ready || onDisk.Name != "dev-0" {
		t.Fatalf("state file: %s", data)
	}

	w := startWatch(t, s)
	w.next(t, Ready)
	edit := []byte(`{"name":"dev-0","state":"Allocated","allocation":{"match_id":"m-7"}}`)
	if err := os.WriteFile(path, edit, 0o644); err != nil {
		t.Fatal(err)
	}
	gs := w.next(t, Allocated)
	if gs.Allocation["match_id"] != "m-7" {
		t.Fatalf("allocation from the file: %+v", gs)
	}
	// Back to Ready clears the allocation in the file too.
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	onDisk = GameServer{}
	json.Unmarshal(data, &onDisk)
	if onDisk.State != Ready || onDisk.Allocation != nil {
		t.Fatalf("state file after Ready: %s", data)
	}

	// A restarted process picks the state up from the file.
	again, err := New(Options{LocalFile: path, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := again.GameServer(ctx); cur.State != Ready || cur.Name != "dev-0" {
		t.Fatalf("reloaded: %+v", cur)
	}

	// A broken edit is ignored, not adopted.
	os.WriteFile(path, []byte("{not json"), 0o644)
	if cur, _ := again.GameServer(ctx); cur.State != Ready {
		t.Fatalf("after a broken edit: %+v", cur)
	}
}

// A write with an old version is refused in local mode as on the API
// server.
func TestLocalStaleWriteConflicts(t *testing.T) {
	st, err := newLocalStore(Options{Log: quiet, LocalPoll: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, _ := st.get(ctx)
	if _, err := st.patch(ctx, &podPatch{labels: map[string]*string{"a": ptr("b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.patch(ctx, &podPatch{resourceVersion: old.ResourceVersion}); !errors.Is(err, errConflict) {
		t.Fatalf("stale local write: %v", err)
	}
}
