package gitsource

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// origin is a bare repository fed by pushes from a working clone, as a Git
// host would be.
type origin struct {
	t    *testing.T
	bare string
	work *git.Repository
	dir  string
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	bare := filepath.Join(t.TempDir(), "origin.git")
	if _, err := git.PlainInitWithOptions(bare, &git.PlainInitOptions{
		Bare: true, InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "work")
	work, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := work.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{bare}}); err != nil {
		t.Fatal(err)
	}
	return &origin{t: t, bare: bare, work: work, dir: dir}
}

// push commits files (path -> content; empty content deletes) and pushes.
func (o *origin) push(msg string, files map[string]string) string {
	o.t.Helper()
	wt, err := o.work.Worktree()
	if err != nil {
		o.t.Fatal(err)
	}
	for p, body := range files {
		full := filepath.Join(o.dir, p)
		if body == "" {
			if _, err := wt.Remove(p); err != nil {
				o.t.Fatal(err)
			}
			continue
		}
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
	h, err := wt.Commit(msg, &git.CommitOptions{Author: &object.Signature{Name: "test", Email: "t@example.com", When: time.Now()}})
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.work.Push(&git.PushOptions{RemoteName: "origin"}); err != nil {
		o.t.Fatal(err)
	}
	return h.String()
}

func TestConfigCloneFetchReadsTipUnderPath(t *testing.T) {
	// No git binary may be found: everything happens in the process.
	t.Setenv("PATH", t.TempDir())
	o := newOrigin(t)
	first := o.push("first", map[string]string{
		"config/economy.yaml": "values:\n  gold: 1\n",
		"config/notes.txt":    "not configuration",
		"README.md":           "outside the path",
	})
	ctx := context.Background()
	repo, err := Clone(ctx, Options{URL: "file://" + o.bare, Branch: "main", Path: "config/"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != first || len(c.Files) != 1 || string(c.Files["economy.yaml"]) != "values:\n  gold: 1\n" {
		t.Fatalf("commit %s files %v, want %s with economy.yaml only", c.ID, c.Files.Paths(), first)
	}
	second := o.push("second", map[string]string{"config/economy.yaml": "values:\n  gold: 2\n"})
	c, err = repo.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != second || string(c.Files["economy.yaml"]) != "values:\n  gold: 2\n" || c.Message != "second" {
		t.Fatalf("after push: %s %q %q", c.ID, c.Files["economy.yaml"], c.Message)
	}
	if yes, ok := repo.IsAncestor(first, second); !yes || !ok {
		t.Fatalf("IsAncestor(first, second) = %v, %v", yes, ok)
	}
	if yes, ok := repo.IsAncestor(second, first); yes || !ok {
		t.Fatalf("IsAncestor(second, first) = %v, %v", yes, ok)
	}
	if _, ok := repo.IsAncestor(first, "0123456789012345678901234567890123456789"); ok {
		t.Fatal("an unknown commit must not be judged")
	}

	// A plain local path works as well as file://, and old revisions read.
	prev, err := ReadRevision(ctx, Options{URL: o.dir, Path: "config"}, "HEAD~1")
	if err != nil {
		t.Fatal(err)
	}
	if prev.ID != first || string(prev.Files["economy.yaml"]) != "values:\n  gold: 1\n" {
		t.Fatalf("HEAD~1 = %s %q", prev.ID, prev.Files["economy.yaml"])
	}
}

func TestConfigCloneErrorsNameTheProblem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Clone(ctx, Options{URL: filepath.Join(t.TempDir(), "missing"), Branch: "main"})
	if err == nil {
		t.Fatal("clone of a missing repository succeeded")
	}
	o := newOrigin(t)
	o.push("first", map[string]string{"a.yaml": "values: {}\n"})
	_, err = Clone(ctx, Options{URL: o.bare, Branch: "nope"})
	if err == nil {
		t.Fatal("clone of a missing branch succeeded")
	}
	t.Log(err)
	repo, err := Clone(ctx, Options{URL: o.bare, Branch: "main", Path: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Fetch(ctx); err == nil {
		t.Fatal("a missing path read as a configuration")
	}
}
