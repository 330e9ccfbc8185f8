// Package gameserver is the SDK a dedicated game server links to tell
// rally-operator where it is in its life: Ready to take a match, Allocated,
// healthy (background pings), Shutdown when its game is over; and to learn
// when it was allocated and with which match metadata (Watch).
//
// In a cluster the state lives on the server's own pod (labels and
// annotations), written through the Kubernetes API server with the pod's
// service account, so it survives an operator restart and the operator,
// the allocator and the server all see the same thing. The pod finds
// itself from two environment variables the operator sets through the
// downward API, RALLY_GAMESERVER_NAME and RALLY_GAMESERVER_NAMESPACE.
//
// For development without a cluster, set RALLY_GAMESERVER_LOCAL=1 (state
// kept in the process and logged) or RALLY_GAMESERVER_LOCAL=<file> (state
// also written to that JSON file; editing the file, e.g. to
// {"state":"Allocated","allocation":{"match_id":"m1"}}, plays the
// allocator).
package gameserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// Environment variables the SDK reads.
const (
	// EnvName and EnvNamespace identify the pod; the operator sets them
	// from the downward API (metadata.name, metadata.namespace).
	EnvName      = "RALLY_GAMESERVER_NAME"
	EnvNamespace = "RALLY_GAMESERVER_NAMESPACE"
	// EnvLocal selects local mode: "1" or "true" keeps the state in the
	// process; any other value is the path of a JSON state file.
	EnvLocal = "RALLY_GAMESERVER_LOCAL"
	// EnvHealthPeriod is the interval of StartHealth's pings, as a Go
	// duration ("5s"); it should match the set's spec.health.periodSeconds.
	EnvHealthPeriod = "RALLY_GAMESERVER_HEALTH_PERIOD"
)

// State is a game server's life-cycle state.
type State = gamev1.GameServerState

// The states, as the operator defines them.
const (
	Starting  = gamev1.StateStarting
	Ready     = gamev1.StateReady
	Allocated = gamev1.StateAllocated
	Shutdown  = gamev1.StateShutdown
	Unhealthy = gamev1.StateUnhealthy
)

// GameServer is what the SDK knows of this server.
type GameServer struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Set is the owning GameServerSet.
	Set         string `json:"set,omitempty"`
	State       State  `json:"state"`
	GameVersion string `json:"gameVersion,omitempty"`
	// Labels are the pod's labels under sdk.game.rally.dev/ (set through
	// SetLabel, or by an allocation), without that prefix.
	Labels map[string]string `json:"labels,omitempty"`
	// Allocation is the metadata of the current allocation (match id,
	// players...), nil when not allocated.
	Allocation  map[string]string `json:"allocation,omitempty"`
	AllocatedAt time.Time         `json:"allocatedAt,omitzero"`
	LastHealth  time.Time         `json:"lastHealth,omitzero"`
}

// sameState reports whether a and b differ only in health pings: Watch
// reports changes of state, labels and allocation, not every ping.
func sameState(a, b *GameServer) bool {
	return a.Name == b.Name && a.State == b.State && a.GameVersion == b.GameVersion &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Allocation, b.Allocation) &&
		a.AllocatedAt.Equal(b.AllocatedAt)
}

// ErrTransition is returned when the server's current state does not
// allow the requested change (e.g. Ready after Shutdown).
var ErrTransition = errors.New("gameserver: transition not allowed")

// ErrGone is returned by Watch when the server's pod is deleted.
var ErrGone = errors.New("gameserver: the game server was deleted")

// errConflict: the object changed since it was read; read and try again.
var errConflict = errors.New("gameserver: conflict")

// Options configures New. Zero values are read from the environment.
type Options struct {
	// Local selects local mode; LocalFile, when set, also persists the
	// state there (and implies Local). Default: from RALLY_GAMESERVER_LOCAL.
	Local     bool
	LocalFile string
	// Config reaches the API server; default: the in-cluster config (the
	// pod's service account).
	Config *rest.Config
	// Name and Namespace of the pod; default: RALLY_GAMESERVER_NAME and
	// RALLY_GAMESERVER_NAMESPACE.
	Name      string
	Namespace string
	// HealthPeriod is StartHealth's interval; default:
	// RALLY_GAMESERVER_HEALTH_PERIOD, else 5 s.
	HealthPeriod time.Duration
	// LocalPoll is how often local mode looks for edits of LocalFile
	// while watching; default 500 ms.
	LocalPoll time.Duration
	Log       *slog.Logger
}

// SDK talks for one game server.
type SDK struct {
	store  podStore
	period time.Duration
	log    *slog.Logger
	now    func() time.Time
}

// podStore reads and writes the server's pod: the API server in a
// cluster, memory (and a file) in local mode.
type podStore interface {
	get(ctx context.Context) (*corev1.Pod, error)
	// patch applies p; with p.resourceVersion set it fails with
	// errConflict when the pod changed since that version.
	patch(ctx context.Context, p *podPatch) (*corev1.Pod, error)
	// watch calls fn with the pod now and after every change until ctx
	// ends (returning nil) or the pod is deleted (ErrGone).
	watch(ctx context.Context, fn func(*corev1.Pod)) error
}

// podPatch changes labels and annotations; a nil value removes the key.
type podPatch struct {
	resourceVersion string
	labels          map[string]*string
	annotations     map[string]*string
}

func ptr(s string) *string { return &s }

// New returns the SDK for this server: local mode when asked (option or
// RALLY_GAMESERVER_LOCAL), else the API server.
func New(opts Options) (*SDK, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = os.Getenv(EnvName)
	}
	if opts.Namespace == "" {
		opts.Namespace = os.Getenv(EnvNamespace)
	}
	if opts.HealthPeriod == 0 {
		opts.HealthPeriod = 5 * time.Second
		if v := os.Getenv(EnvHealthPeriod); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("gameserver: %s=%q is not a positive duration", EnvHealthPeriod, v)
			}
			opts.HealthPeriod = d
		}
	}
	if opts.HealthPeriod < 0 {
		return nil, fmt.Errorf("gameserver: negative health period %v", opts.HealthPeriod)
	}
	if !opts.Local && opts.LocalFile == "" {
		switch v := os.Getenv(EnvLocal); strings.ToLower(v) {
		case "", "0", "false":
		case "1", "true":
			opts.Local = true
		default:
			opts.LocalFile = v
		}
	}
	s := &SDK{period: opts.HealthPeriod, log: opts.Log, now: time.Now}
	if opts.Local || opts.LocalFile != "" {
		if opts.LocalPoll <= 0 {
			opts.LocalPoll = 500 * time.Millisecond
		}
		st, err := newLocalStore(opts)
		if err != nil {
			return nil, err
		}
		s.store = st
		return s, nil
	}
	if opts.Name == "" || opts.Namespace == "" {
		return nil, fmt.Errorf("gameserver: %s and %s must name this pod (the operator sets them; for development without a cluster set %s=1)",
			EnvName, EnvNamespace, EnvLocal)
	}
	cfg := opts.Config
	if cfg == nil {
		var err error
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("gameserver: not in a cluster (%v); for development set %s=1", err, EnvLocal)
		}
	}
	st, err := newKubeStore(cfg, opts.Namespace, opts.Name)
	if err != nil {
		return nil, err
	}
	s.store = st
	return s, nil
}

// GameServer returns the server as stored now.
func (s *SDK) GameServer(ctx context.Context) (*GameServer, error) {
	pod, err := s.store.get(ctx)
	if err != nil {
		return nil, err
	}
	return fromPod(pod), nil
}

// Ready says the server can take a match: Starting -> Ready, or Allocated
// -> Ready to return to the pool after a game (the allocation metadata is
// cleared). Ready when Ready already does nothing.
func (s *SDK) Ready(ctx context.Context) error {
	return s.transition(ctx, Ready, func(from State) *podPatch {
		switch from {
		case Ready:
			return nil
		case Starting:
			return &podPatch{labels: map[string]*string{gamev1.LabelState: ptr(string(Ready))}}
		case Allocated:
			return &podPatch{
				labels:      map[string]*string{gamev1.LabelState: ptr(string(Ready))},
				annotations: map[string]*string{gamev1.AnnotationAllocation: nil, gamev1.AnnotationAllocatedAt: nil},
			}
		}
		return nil
	})
}

// Allocate marks the server Allocated itself (Ready -> Allocated), for
// games that hand out servers without the allocation API. Allocate when
// Allocated already does nothing.
func (s *SDK) Allocate(ctx context.Context) error {
	return s.transition(ctx, Allocated, func(from State) *podPatch {
		switch from {
		case Allocated:
			return nil
		case Ready:
			return &podPatch{
				labels:      map[string]*string{gamev1.LabelState: ptr(string(Allocated))},
				annotations: map[string]*string{gamev1.AnnotationAllocatedAt: ptr(s.now().UTC().Format(time.RFC3339Nano))},
			}
		}
		return nil
	})
}

// Shutdown says the server is done: the operator deletes its pod and
// starts a replacement. Allowed from any state.
func (s *SDK) Shutdown(ctx context.Context) error {
	_, err := s.store.patch(ctx, &podPatch{labels: map[string]*string{gamev1.LabelState: ptr(string(Shutdown))}})
	if err == nil {
		s.log.Info("gameserver: shutdown")
	}
	return err
}

// transition moves the server to state to. plan returns the patch for the
// current state, or nil when there is nothing to do (from == to) or the
// change is not allowed. The write carries the version
// read, so a concurrent change (an allocation) is never overwritten: on a
// conflict the state is read again.
func (s *SDK) transition(ctx context.Context, to State, plan func(from State) *podPatch) error {
	for {
		pod, err := s.store.get(ctx)
		if err != nil {
			return err
		}
		from := State(pod.Labels[gamev1.LabelState])
		p := plan(from)
		if p == nil {
			if from == to {
				return nil
			}
			return fmt.Errorf("%w: %s -> %s", ErrTransition, from, to)
		}
		p.resourceVersion = pod.ResourceVersion
		_, err = s.store.patch(ctx, p)
		if errors.Is(err, errConflict) {
			continue
		}
		if err == nil {
			s.log.Info("gameserver: state", "from", from, "to", to)
		}
		return err
	}
}

// SetLabel sets label sdk.game.rally.dev/<key> on the server, e.g. the map
// being played, for allocation selectors to match. An empty value is a
// valid label value; use it rather than deleting.
func (s *SDK) SetLabel(ctx context.Context, key, value string) error {
	full := gamev1.LabelUserPrefix + key
	if key == "" || strings.Contains(key, "/") {
		return fmt.Errorf("gameserver: label key %q: must be a name without a prefix", key)
	}
	if errs := validation.IsQualifiedName(full); len(errs) > 0 {
		return fmt.Errorf("gameserver: label key %q: %s", key, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
		return fmt.Errorf("gameserver: label %q value %q: %s", key, value, strings.Join(errs, "; "))
	}
	_, err := s.store.patch(ctx, &podPatch{labels: map[string]*string{full: &value}})
	return err
}

// Health sends one health ping. A Ready or Allocated server whose pings
// stop for longer than the set's health threshold is marked Unhealthy and
// replaced; StartHealth sends them in the background.
func (s *SDK) Health(ctx context.Context) error {
	_, err := s.store.patch(ctx, &podPatch{annotations: map[string]*string{
		gamev1.AnnotationHealth: ptr(s.now().UTC().Format(time.RFC3339Nano)),
	}})
	return err
}

// StartHealth pings at once and then every health period until ctx ends
// or stop is called; stop returns when the pinging goroutine has ended.
// Failed pings are logged and retried at the next period.
func (s *SDK) StartHealth(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.period)
		defer t.Stop()
		for {
			if err := s.Health(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("gameserver: health ping failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(cancel)
		<-done
	}
}

// Watch calls fn with the server's current state, then after every change
// of state, labels or allocation (not for health pings), until ctx ends
// (returning nil) or the pod is deleted (ErrGone). fn runs on Watch's
// goroutine; a slow fn delays the next call, and intermediate states may
// be skipped but the latest is always delivered.
func (s *SDK) Watch(ctx context.Context, fn func(GameServer)) error {
	var last *GameServer
	return s.store.watch(ctx, func(pod *corev1.Pod) {
		gs := fromPod(pod)
		if last != nil && sameState(last, gs) {
			return
		}
		last = gs
		fn(*gs)
	})
}

// WaitAllocated blocks until the server is Allocated and returns it, with
// the allocation metadata: what a server does after Ready.
func (s *SDK) WaitAllocated(ctx context.Context) (*GameServer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got *GameServer
	err := s.Watch(ctx, func(gs GameServer) {
		if gs.State == Allocated && got == nil {
			got = &gs
			cancel()
		}
	})
	if got != nil {
		return got, nil
	}
	if err == nil {
		err = ctx.Err()
	}
	return nil, err
}

// fromPod reads the SDK's view of a pod.
func fromPod(pod *corev1.Pod) *GameServer {
	gs := &GameServer{
		Name:        pod.Name,
		Namespace:   pod.Namespace,
		Set:         pod.Labels[gamev1.LabelSet],
		State:       State(pod.Labels[gamev1.LabelState]),
		GameVersion: pod.Labels[gamev1.LabelGameVersion],
	}
	for k, v := range pod.Labels {
		if name, ok := strings.CutPrefix(k, gamev1.LabelUserPrefix); ok {
			if gs.Labels == nil {
				gs.Labels = map[string]string{}
			}
			gs.Labels[name] = v
		}
	}
	if raw := pod.Annotations[gamev1.AnnotationAllocation]; raw != "" {
		var meta map[string]string
		if err := json.Unmarshal([]byte(raw), &meta); err == nil {
			gs.Allocation = meta
		} else {
			// Not ours to refuse: hand it over whole.
			gs.Allocation = map[string]string{"": raw}
		}
	}
	gs.AllocatedAt, _ = time.Parse(time.RFC3339Nano, pod.Annotations[gamev1.AnnotationAllocatedAt])
	gs.LastHealth, _ = time.Parse(time.RFC3339Nano, pod.Annotations[gamev1.AnnotationHealth])
	return gs
}
