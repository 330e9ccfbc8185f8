// Package gitsource reads live configurations out of a Git repository with
// go-git, in the process: no git binary is needed. It keeps a bare clone of
// one branch in memory, fetches it on demand and returns the configuration
// files of the tip commit (under an optional path); the commit id is the
// configuration's version.
package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/rallyhq/rally/internal/liveconfig"
)

func init() {
	// go-git serves file:// and local paths by running git-upload-pack;
	// serve them in the process instead, so no git binary is needed.
	client.InstallProtocol("file", server.NewClient(localLoader{}))
}

// localLoader opens a local repository, bare or with a work tree.
type localLoader struct{}

func (localLoader) Load(ep *transport.Endpoint) (storer.Storer, error) {
	dir := ep.Path
	if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
		dir = filepath.Join(dir, ".git")
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return nil, transport.ErrRepositoryNotFound
	}
	return filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault()), nil
}

// Options select a branch of a repository.
type Options struct {
	// URL is a local path, file://, ssh:// (or user@host:path) or https://.
	URL    string
	Branch string
	// Path is the directory inside the repository that holds the
	// configuration; empty is the root.
	Path string
	// Username and Password authenticate over HTTPS (a token goes in
	// Password); SSHKeyFile over SSH (else the SSH agent is used).
	Username, Password string
	SSHKeyFile         string
}

// Commit is a configuration as committed.
type Commit struct {
	ID      string
	When    time.Time
	Message string
	Files   liveconfig.Files
}

// Repo is a bare in-memory clone of one branch.
type Repo struct {
	opts Options
	auth transport.AuthMethod

	mu   sync.Mutex
	repo *git.Repository
}

// Clone fetches the branch for the first time.
func Clone(ctx context.Context, opts Options) (*Repo, error) {
	if opts.Branch == "" {
		opts.Branch = "main"
	}
	opts.Path = strings.Trim(path.Clean("/"+opts.Path), "/")
	auth, err := authFor(opts)
	if err != nil {
		return nil, err
	}
	repo, err := git.CloneContext(ctx, memory.NewStorage(), nil, &git.CloneOptions{
		URL: opts.URL, Auth: auth, ReferenceName: plumbing.NewBranchReferenceName(opts.Branch),
		SingleBranch: true, NoCheckout: true, Tags: git.NoTags,
	})
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git clone %s (branch %s): %w", opts.URL, opts.Branch, err)
	}
	return &Repo{opts: opts, auth: auth, repo: repo}, nil
}

func authFor(opts Options) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git url %q: %w", opts.URL, err)
	}
	switch ep.Protocol {
	case "ssh":
		user := ep.User
		if user == "" {
			user = "git"
		}
		if opts.SSHKeyFile != "" {
			auth, err := gitssh.NewPublicKeysFromFile(user, opts.SSHKeyFile, opts.Password)
			if err != nil {
				return nil, fmt.Errorf("liveconfig: git ssh key %s: %w", opts.SSHKeyFile, err)
			}
			return auth, nil
		}
		return nil, nil // go-git falls back to the SSH agent
	case "http", "https":
		if opts.Username != "" || opts.Password != "" {
			user := opts.Username
			if user == "" {
				user = "git" // token-only hosts accept any user name
			}
			return &githttp.BasicAuth{Username: user, Password: opts.Password}, nil
		}
	}
	return nil, nil
}

// Fetch brings the branch up to date and returns its tip.
func (r *Repo) Fetch(ctx context.Context) (*Commit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ref := plumbing.NewRemoteReferenceName("origin", r.opts.Branch)
	err := r.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin", Auth: r.auth, Tags: git.NoTags, Force: true,
		RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec("+" + plumbing.NewBranchReferenceName(r.opts.Branch).String() + ":" + ref.String())},
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("liveconfig: git fetch %s: %w", r.opts.URL, err)
	}
	tip, err := r.repo.Reference(ref, true)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git branch %s: %w", r.opts.Branch, err)
	}
	c, err := r.repo.CommitObject(tip.Hash())
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git commit %s: %w", tip.Hash(), err)
	}
	return readCommit(c, r.opts.Path)
}

// IsAncestor reports whether commit a comes before commit b on the
// branch's history. ok is false when either is unknown to this clone.
func (r *Repo) IsAncestor(a, b string) (isAncestor, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ca, err := r.repo.CommitObject(plumbing.NewHash(a))
	if err != nil {
		return false, false
	}
	cb, err := r.repo.CommitObject(plumbing.NewHash(b))
	if err != nil {
		return false, false
	}
	yes, err := ca.IsAncestor(cb)
	return yes, err == nil
}

// readCommit collects the configuration files of a commit under dir.
func readCommit(c *object.Commit, dir string) (*Commit, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git tree of %s: %w", c.Hash, err)
	}
	if dir != "" {
		if tree, err = tree.Tree(dir); err != nil {
			return nil, fmt.Errorf("liveconfig: git commit %s has no directory %s: %w", c.Hash.String()[:12], dir, err)
		}
	}
	files := liveconfig.Files{}
	err = tree.Files().ForEach(func(f *object.File) error {
		if f.Mode != filemode.Regular && f.Mode != filemode.Executable {
			return nil // symbolic links and submodules are not configuration
		}
		if !liveconfig.Supported(f.Name) {
			return nil
		}
		rd, err := f.Reader()
		if err != nil {
			return err
		}
		defer rd.Close()
		b, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		files[f.Name] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git read %s: %w", c.Hash, err)
	}
	return &Commit{ID: c.Hash.String(), When: c.Committer.When, Message: strings.TrimSpace(c.Message), Files: files}, nil
}

// ReadRevision reads the configuration at a revision (a branch, tag,
// commit id or expression like HEAD~1) of a repository: a local one is
// opened where it is, a remote one is cloned into memory first.
func ReadRevision(ctx context.Context, opts Options, revision string) (*Commit, error) {
	opts.Path = strings.Trim(path.Clean("/"+opts.Path), "/")
	var repo *git.Repository
	if fi, err := os.Stat(opts.URL); err == nil && fi.IsDir() {
		// A bare repository opens as it is; a work tree may be given by any
		// directory inside it.
		repo, err = git.PlainOpen(opts.URL)
		if errors.Is(err, git.ErrRepositoryNotExists) {
			repo, err = git.PlainOpenWithOptions(opts.URL, &git.PlainOpenOptions{DetectDotGit: true})
		}
		if err != nil {
			return nil, fmt.Errorf("liveconfig: git open %s: %w", opts.URL, err)
		}
	} else {
		auth, err := authFor(opts)
		if err != nil {
			return nil, err
		}
		repo, err = git.CloneContext(ctx, memory.NewStorage(), nil, &git.CloneOptions{URL: opts.URL, Auth: auth, NoCheckout: true})
		if err != nil {
			return nil, fmt.Errorf("liveconfig: git clone %s: %w", opts.URL, err)
		}
	}
	h, err := repo.ResolveRevision(plumbing.Revision(revision))
	if err != nil {
		// A branch of a clone lives under the remote's name.
		if h2, err2 := repo.ResolveRevision(plumbing.Revision("refs/remotes/origin/" + revision)); err2 == nil {
			h, err = h2, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git revision %q in %s: %w", revision, opts.URL, err)
	}
	c, err := repo.CommitObject(*h)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: git commit %s: %w", h, err)
	}
	return readCommit(c, opts.Path)
}
