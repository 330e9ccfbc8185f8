package liveconfig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ExposureSubject is the JetStream subject exposures are published on.
const ExposureSubject = "rally.config.exposure"

// Exposure says that a player was served a variant: the event analysis
// joins with outcomes.
type Exposure struct {
	PlayerID   string    `json:"player_id"`
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Variant    string    `json:"variant"`
	Layer      string    `json:"layer,omitempty"`
	Version    string    `json:"config_version"`
	Node       string    `json:"node,omitempty"`
	At         time.Time `json:"at"`
	Region     string    `json:"region,omitempty"`
	Device     string    `json:"device,omitempty"`
	Platform   string    `json:"platform,omitempty"`
	AppVersion string    `json:"app_version,omitempty"`
	Cohorts    []string  `json:"cohorts,omitempty"`
}

// ExposureOptions configure StartExposures.
type ExposureOptions struct {
	// Stream holds the exposures (subject ExposureSubject); created or
	// updated at start.
	Stream string
	MaxAge time.Duration
	// Node is this node's id, put in every event.
	Node string
	// Queue bounds the events waiting to be published; beyond it they are
	// dropped and counted (default 4096).
	Queue int
	// Remember bounds how many (player, experiment, variant) triples are
	// remembered as already published (default 100000); a player asking
	// again is not a new exposure.
	Remember   int
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Exposures publishes exposure events to JetStream from one goroutine, off
// the request path: a slow NATS never slows GetConfig.
type Exposures struct {
	js       jetstream.JetStream
	opts     ExposureOptions
	q        chan Exposure
	done     chan struct{}
	finished chan struct{}
	total    *prometheus.CounterVec
	stop     sync.Once

	mu   sync.Mutex
	seen map[string]struct{}
}

// StartExposures creates the exposure stream and starts publishing.
func StartExposures(ctx context.Context, js jetstream.JetStream, opts ExposureOptions) (*Exposures, error) {
	if opts.Queue <= 0 {
		opts.Queue = 4096
	}
	if opts.Remember <= 0 {
		opts.Remember = 100000
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	dedupe := 10 * time.Minute // the window JetStream drops repeated exposures in
	if opts.MaxAge > 0 && opts.MaxAge < dedupe {
		dedupe = opts.MaxAge
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: opts.Stream, Subjects: []string{ExposureSubject}, MaxAge: opts.MaxAge,
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardOld, Duplicates: dedupe,
		Description: "Rally live config exposures: which player was served which variant",
	}); err != nil {
		return nil, fmt.Errorf("liveconfig: exposure stream %s: %w", opts.Stream, err)
	}
	x := &Exposures{
		js: js, opts: opts, q: make(chan Exposure, opts.Queue), done: make(chan struct{}),
		finished: make(chan struct{}), seen: map[string]struct{}{},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_liveconfig_exposures_total",
			Help: "Exposure events by outcome: published, dropped (queue full) or failed (JetStream refused).",
		}, []string{"outcome"}),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(x.total); err != nil {
			return nil, err
		}
	}
	go x.run()
	return x, nil
}

// Record queues one event per assignment the player has not been seen in
// before. It never blocks.
func (x *Exposures) Record(p Player, r *Resolved) {
	select {
	case <-x.done:
		return
	default:
	}
	now := time.Now()
	for _, a := range r.Assignments {
		key := p.ID + "\x00" + a.ID + "\x00" + a.Variant
		x.mu.Lock()
		_, dup := x.seen[key]
		if !dup {
			if len(x.seen) >= x.opts.Remember {
				clear(x.seen) // forgetting only costs a duplicate event, which JetStream dedupes within its window
			}
			x.seen[key] = struct{}{}
		}
		x.mu.Unlock()
		if dup {
			continue
		}
		ev := Exposure{
			PlayerID: p.ID, ID: a.ID, Kind: a.Kind.String(), Variant: a.Variant, Layer: a.Layer,
			Version: r.Version(), Node: x.opts.Node, At: now, Region: p.Region, Device: p.Device,
			Platform: p.Platform, AppVersion: p.AppVersion, Cohorts: p.Cohorts,
		}
		select {
		case x.q <- ev:
		default:
			x.total.WithLabelValues("dropped").Inc()
			x.mu.Lock()
			delete(x.seen, key) // let the next request try again
			x.mu.Unlock()
		}
	}
}

func (x *Exposures) run() {
	defer close(x.finished)
	failing := false
	for {
		select {
		case ev := <-x.q:
			x.publish(ev, &failing)
		case <-x.done:
			for {
				select {
				case ev := <-x.q:
					x.publish(ev, &failing)
				default:
					return
				}
			}
		}
	}
}

func (x *Exposures) publish(ev Exposure, failing *bool) {
	data, err := json.Marshal(ev)
	if err != nil {
		x.total.WithLabelValues("failed").Inc()
		return
	}
	id := sha256.Sum256([]byte(ev.PlayerID + "\x00" + ev.ID + "\x00" + ev.Variant + "\x00" + ev.Version))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := x.js.Publish(ctx, ExposureSubject, data, jetstream.WithMsgID(hex.EncodeToString(id[:16]))); err != nil {
		x.total.WithLabelValues("failed").Inc()
		if !*failing {
			x.opts.Log.Warn("live config exposure not published", "err", err)
		}
		*failing = true
		return
	}
	*failing = false
	x.total.WithLabelValues("published").Inc()
}

// Close publishes what is queued and stops, or gives up when ctx ends.
func (x *Exposures) Close(ctx context.Context) error {
	x.stop.Do(func() { close(x.done) })
	select {
	case <-x.finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
