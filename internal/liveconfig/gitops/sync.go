package gitops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rallyhq/rally/internal/liveconfig"
	"github.com/rallyhq/rally/internal/liveconfig/gitsource"
)

// Source is the name this package gives its versions.
const Source = "git"

// Target takes published versions and refusals; *liveconfig.Live is one.
type Target interface {
	Offer(ctx context.Context, files liveconfig.Files, opts liveconfig.Options, origin time.Time) (*liveconfig.Snapshot, error)
	Rejected(source, version string, err error)
}

// SyncOptions configure a Syncer.
type SyncOptions struct {
	Git gitsource.Options
	// Node names this node in what it publishes.
	Node string
	// FetchTimeout bounds one clone or fetch (default 30 s).
	FetchTimeout time.Duration
	Registerer   prometheus.Registerer
	Tracer       trace.TracerProvider
	Log          *slog.Logger
}

// Syncer fetches the branch and publishes each new sound commit.
type Syncer struct {
	ch      *Channel
	target  Target
	opts    SyncOptions
	tracer  trace.Tracer
	trigger chan struct{}

	fetches   *prometheus.CounterVec
	fetchTime prometheus.Histogram
	published prometheus.Counter

	mu          sync.Mutex // one sync at a time; guards what follows
	repo        *gitsource.Repo
	lastRefused string
}

// NewSyncer returns a syncer publishing through ch and reporting refused
// commits to target.
func NewSyncer(ch *Channel, target Target, opts SyncOptions) *Syncer {
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	tp := opts.Tracer
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	s := &Syncer{
		ch: ch, target: target, opts: opts, tracer: tp.Tracer("rally/liveconfig/gitops"),
		trigger: make(chan struct{}, 1),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_liveconfig_git_fetches_total", Help: "Fetches of the configuration branch, by outcome (ok, error).",
		}, []string{"outcome"}),
		fetchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_liveconfig_git_fetch_seconds", Help: "Duration of one clone or fetch of the configuration branch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_liveconfig_git_published_total", Help: "Commits this node validated and published to the cluster.",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.fetches, s.fetchTime, s.published)
	}
	return s
}

// Trigger asks for a sync soon (a webhook calls it); calls while one is
// pending are merged.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run syncs on every trigger and every poll interval (0: triggers only)
// until ctx ends.
func (s *Syncer) Run(ctx context.Context, poll time.Duration) {
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
		case <-s.trigger:
		case <-ctx.Done():
			return
		}
		if _, err := s.Sync(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errRefused) {
			s.opts.Log.Warn("live config git sync failed", "url", s.opts.Git.URL, "err", err)
		}
	}
}

// errRefused marks a commit already reported as invalid.
var errRefused = errors.New("liveconfig: commit refused")

// Sync fetches the branch and, if its tip is new and sound, publishes it.
// It returns the version the cluster holds afterwards. An invalid tip is
// reported to the target once and never published.
func (s *Syncer) Sync(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, span := s.tracer.Start(ctx, "liveconfig.git_sync", trace.WithAttributes(attribute.String("git.url", s.opts.Git.URL)))
	defer span.End()
	version, err := s.sync(ctx)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attribute.String("config.version", version))
	return version, err
}

func (s *Syncer) sync(ctx context.Context) (string, error) {
	commit, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	// A conflict means another node published meanwhile: look again.
	for attempt := 0; ; attempt++ {
		cur, rev, err := s.ch.Current(ctx)
		if err != nil && rev == 0 {
			return "", err
		}
		if cur != nil {
			if cur.Version == commit.ID {
				return cur.Version, nil
			}
			// A node that fetched later already published a newer commit.
			if before, known := s.repo.IsAncestor(commit.ID, cur.Version); known && before {
				return cur.Version, nil
			}
		}
		if commit.ID == s.lastRefused {
			return currentVersion(cur), errRefused
		}
		if _, err := liveconfig.Build(commit.Files, liveconfig.Options{Version: commit.ID, Source: Source}); err != nil {
			s.lastRefused = commit.ID
			s.target.Rejected(Source, commit.ID, fmt.Errorf("commit %.12s refused whole: %w", commit.ID, err))
			return currentVersion(cur), fmt.Errorf("%w: %.12s: %w", errRefused, commit.ID, err)
		}
		err = s.ch.Publish(ctx, &Published{
			Version: commit.ID, Files: commit.Files, PublishedAt: time.Now(), Node: s.opts.Node, Message: commit.Message,
		}, rev)
		if errors.Is(err, ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return currentVersion(cur), err
		}
		s.published.Inc()
		s.opts.Log.Info("live config commit published", "version", commit.ID, "message", commit.Message,
			"previous", currentVersion(cur))
		return commit.ID, nil
	}
}

func currentVersion(p *Published) string {
	if p == nil {
		return ""
	}
	return p.Version
}

func (s *Syncer) fetch(ctx context.Context) (*gitsource.Commit, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.FetchTimeout)
	defer cancel()
	start := time.Now()
	var commit *gitsource.Commit
	var err error
	if s.repo == nil {
		s.repo, err = gitsource.Clone(ctx, s.opts.Git)
	}
	if err == nil {
		commit, err = s.repo.Fetch(ctx)
	}
	s.fetchTime.Observe(time.Since(start).Seconds())
	if err != nil {
		s.fetches.WithLabelValues("error").Inc()
		return nil, err
	}
	s.fetches.WithLabelValues("ok").Inc()
	return commit, nil
}
