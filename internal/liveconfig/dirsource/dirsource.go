// Package dirsource keeps a live configuration in step with a directory:
// it watches the directory tree with fsnotify and, after each burst of
// changes, offers the whole directory again as one version.
//
// Watching the directory rather than each file matters: editors save by
// writing a temporary file and renaming it over the original, and
// Kubernetes updates a mounted ConfigMap by swapping a symbolic link, so
// the file a watch was put on is gone after the first save.
package dirsource

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/rallyhq/rally/internal/liveconfig"
)

// Source is the name this package gives its versions.
const Source = "dir"

// Target takes each version read; *liveconfig.Live is one.
type Target interface {
	Offer(ctx context.Context, files liveconfig.Files, opts liveconfig.Options, origin time.Time) (*liveconfig.Snapshot, error)
	Rejected(source, version string, err error)
}

// Options configure Start.
type Options struct {
	Dir string
	// Debounce is how quiet the directory must be before it is read; a
	// burst of writes becomes one reload. A steady stream of writes is read
	// at least every 10 × Debounce.
	Debounce time.Duration
	Log      *slog.Logger
}

// Watcher watches one directory.
type Watcher struct {
	target Target
	opts   Options
	fsw    *fsnotify.Watcher
	cancel context.CancelFunc
	done   chan struct{}
}

// Start loads the directory once (an invalid configuration fails here: a
// node must not start without the configuration it was given) and then
// follows changes until Close.
func Start(ctx context.Context, target Target, opts Options) (*Watcher, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	fi, err := os.Stat(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: dir %s: %w", opts.Dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("liveconfig: dir %s is not a directory", opts.Dir)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("liveconfig: watch %s: %w", opts.Dir, err)
	}
	w := &Watcher{target: target, opts: opts, fsw: fsw, done: make(chan struct{})}
	// Watch first, then read: a change between the two is not missed.
	if err := w.addTree(opts.Dir); err != nil {
		_ = fsw.Close()
		return nil, err
	}
	files, err := liveconfig.ReadDir(opts.Dir)
	if err == nil {
		_, err = target.Offer(ctx, files, liveconfig.Options{Source: Source}, time.Time{})
	}
	if err != nil {
		_ = fsw.Close()
		return nil, fmt.Errorf("liveconfig: %s: %w", opts.Dir, err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	go w.run(runCtx)
	return w, nil
}

// addTree watches dir and every directory under it that is not hidden.
func (w *Watcher) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // vanished while walking
		}
		if !d.IsDir() {
			return nil
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if err := w.fsw.Add(p); err != nil {
			return fmt.Errorf("liveconfig: watch %s: %w", p, err)
		}
		return nil
	})
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // the first event of the pending burst
	arm := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		wait := w.opts.Debounce
		if limit := first.Add(10 * w.opts.Debounce).Sub(now); limit < wait {
			wait = max(limit, 0)
		}
		timer.Reset(wait)
	}
	for {
		select {
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() && !strings.HasPrefix(filepath.Base(ev.Name), ".") {
					if err := w.addTree(ev.Name); err != nil {
						w.opts.Log.Warn("live config: cannot watch new directory", "dir", ev.Name, "err", err)
					}
				}
			}
			arm()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			// An overflow loses events: read the directory to be sure.
			w.opts.Log.Warn("live config: watch error; rereading the directory", "dir", w.opts.Dir, "err", err)
			arm()
		case <-timer.C:
			origin := first
			first = time.Time{}
			w.reload(ctx, origin)
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}

func (w *Watcher) reload(ctx context.Context, origin time.Time) {
	files, err := liveconfig.ReadDir(w.opts.Dir)
	if err != nil {
		w.target.Rejected(Source, "unreadable", err)
		return
	}
	// Offer logs and counts a refusal itself.
	_, _ = w.target.Offer(ctx, files, liveconfig.Options{Source: Source}, origin)
}

// Close stops watching.
func (w *Watcher) Close() error {
	w.cancel()
	err := w.fsw.Close()
	<-w.done
	return err
}
