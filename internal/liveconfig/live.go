package liveconfig

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// LiveOptions configure New.
type LiveOptions struct {
	// Clock is the time experiments are evaluated at; nil is time.Now.
	Clock func() time.Time
	// History is how many reload events History keeps (default 50).
	History    int
	Registerer prometheus.Registerer
	Tracer     trace.TracerProvider
	Log        *slog.Logger
	// Exposures records who was put in which variant; nil records nothing.
	Exposures ExposureRecorder
}

// ExposureRecorder takes the assignments a player was served.
type ExposureRecorder interface {
	Record(p Player, r *Resolved)
}

// Event is one entry of the reload history.
type Event struct {
	At       time.Time `json:"at"`
	Version  string    `json:"version"`
	Source   string    `json:"source"`
	Outcome  string    `json:"outcome"` // accepted or rejected
	Problems []string  `json:"problems,omitempty"`
	// DelayMS is from the change to the swap on this node.
	DelayMS float64 `json:"delay_ms,omitempty"`
}

// Live is the configuration in force on this node. Readers load the
// current snapshot with one atomic read; a new version replaces it with one
// atomic write, so no reader ever sees part of one version and part of
// another.
type Live struct {
	cur       atomic.Pointer[Snapshot]
	clock     func() time.Time
	metrics   *metrics
	tracer    trace.Tracer
	log       *slog.Logger
	exposures ExposureRecorder

	mu           sync.Mutex // serialises Offer; guards what follows
	changed      chan struct{}
	history      []Event
	historyMax   int
	lastRejected string // refused last, so a repeat is not logged again
	lastErr      error
}

// New returns a Live holding the empty configuration.
func New(opts LiveOptions) *Live {
	l := &Live{
		clock: opts.Clock, metrics: newMetrics(opts.Registerer), log: opts.Log,
		exposures: opts.Exposures, changed: make(chan struct{}), historyMax: opts.History,
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.historyMax <= 0 {
		l.historyMax = 50
	}
	tp := opts.Tracer
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	l.tracer = tp.Tracer("rally/liveconfig")
	l.cur.Store(Empty())
	return l
}

// SetExposures sets where exposures go; call it before serving.
func (l *Live) SetExposures(x ExposureRecorder) { l.exposures = x }

// Current returns the snapshot in force.
func (l *Live) Current() *Snapshot { return l.cur.Load() }

// Now is the clock experiments are evaluated with.
func (l *Live) Now() time.Time { return l.clock() }

// Changed returns a channel closed when the next version is swapped in.
// Take it before reading Current, so that no swap goes unnoticed.
func (l *Live) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Resolve returns the configuration player sees now, and records the
// player's exposures. This is the Go API for server code.
func (l *Live) Resolve(p Player) *Resolved {
	r := l.Current().Resolve(p, l.clock())
	if l.exposures != nil && len(r.Assignments) > 0 {
		l.exposures.Record(p, r)
	}
	return r
}

// Offer builds files into a snapshot and swaps it in. An invalid
// configuration is refused whole: the error lists its problems, they are
// logged and counted, and the current version stays live. A version equal
// to the current one changes nothing. origin is when the change started
// (for the propagation metric); zero means unknown.
func (l *Live) Offer(ctx context.Context, files Files, opts Options, origin time.Time) (*Snapshot, error) {
	if opts.Version == "" {
		opts.Version = ContentVersion(files)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur.Load()
	if cur.version == opts.Version {
		l.lastRejected = "" // back to good: the next bad edit is news again
		return cur, nil
	}
	if l.lastRejected == opts.Version {
		return nil, l.lastErr // already logged and counted
	}
	_, span := l.tracer.Start(ctx, "liveconfig.reload", trace.WithAttributes(
		attribute.String("config.source", opts.Source), attribute.String("config.version", opts.Version)))
	defer span.End()
	start := time.Now()
	snap, err := Build(files, opts)
	l.metrics.buildTime.Observe(time.Since(start).Seconds())
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		l.rejectedLocked(opts.Source, opts.Version, err)
		return nil, err
	}
	l.cur.Store(snap)
	close(l.changed)
	l.changed = make(chan struct{})
	l.lastRejected = ""
	ev := Event{At: snap.loaded, Version: snap.version, Source: opts.Source, Outcome: "accepted"}
	if !origin.IsZero() {
		d := max(time.Since(origin), 0)
		ev.DelayMS = float64(d.Microseconds()) / 1000
		l.metrics.propagation.WithLabelValues(opts.Source).Observe(d.Seconds())
	}
	l.record(ev)
	l.metrics.reloads.WithLabelValues(opts.Source).Inc()
	l.metrics.version.Reset()
	l.metrics.version.WithLabelValues(snap.version).Set(1)
	l.metrics.loadedAt.Set(float64(snap.loaded.UnixMilli()) / 1000)
	l.log.Info("live config loaded", "version", snap.version, "source", opts.Source, "previous", cur.version,
		"keys", len(snap.keys), "experiments", len(snap.experiments), "delay_ms", ev.DelayMS)
	return snap, nil
}

// Rejected records a version refused before it reached Offer (a Git commit
// the fetching node would not publish): logged, counted, in the history.
func (l *Live) Rejected(source, version string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastRejected == version {
		return
	}
	l.rejectedLocked(source, version, err)
}

func (l *Live) rejectedLocked(source, version string, err error) {
	l.lastRejected, l.lastErr = version, err
	ev := Event{At: time.Now(), Version: version, Source: source, Outcome: "rejected"}
	var inv *InvalidError
	if errors.As(err, &inv) {
		for _, p := range inv.Problems {
			ev.Problems = append(ev.Problems, p.String())
		}
	} else {
		ev.Problems = []string{err.Error()}
	}
	l.record(ev)
	l.metrics.rejects.WithLabelValues(source).Inc()
	l.log.Warn("live config rejected; the last good version stays live", "version", version, "source", source,
		"live", l.cur.Load().version, "problems", len(ev.Problems), "err", err.Error())
	for _, p := range ev.Problems {
		l.log.Warn("live config problem", "version", version, "problem", p)
	}
}

func (l *Live) record(ev Event) {
	if len(l.history) == l.historyMax {
		copy(l.history, l.history[1:])
		l.history = l.history[:len(l.history)-1]
	}
	l.history = append(l.history, ev)
}

// History returns the latest reload events, newest last.
func (l *Live) History() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.history...)
}
