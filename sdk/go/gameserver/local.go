package gameserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// localStore keeps the pod in memory for development without a cluster,
// logs every change and, with a file, writes the state there as JSON (a
// GameServer) and adopts edits made to the file by hand.
type localStore struct {
	log  *slog.Logger
	file string
	poll time.Duration

	mu      sync.Mutex
	pod     *corev1.Pod
	rv      uint64
	seen    []byte        // the file as last written or read
	changed chan struct{} // closed and replaced on every change
}

func newLocalStore(opts Options) (*localStore, error) {
	name, ns := opts.Name, opts.Namespace
	if name == "" {
		name = "local"
	}
	if ns == "" {
		ns = "default"
	}
	l := &localStore{
		log: opts.Log, file: opts.LocalFile, poll: opts.LocalPoll,
		changed: make(chan struct{}),
		rv:      1,
		pod:     toPod(&GameServer{Name: name, Namespace: ns, State: Starting}),
	}
	if l.file != "" {
		data, err := os.ReadFile(l.file)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := l.persist(); err != nil {
				return nil, err
			}
		case err != nil:
			return nil, fmt.Errorf("gameserver: local state file: %w", err)
		default:
			gs, err := parseLocal(data)
			if err != nil {
				return nil, err
			}
			l.pod, l.seen = toPod(gs), data
		}
	}
	l.pod.ResourceVersion = strconv.FormatUint(l.rv, 10)
	l.log.Info("gameserver: local mode, no cluster", "file", l.file, "state", l.pod.Labels[gamev1.LabelState])
	return l, nil
}

func parseLocal(data []byte) (*GameServer, error) {
	var gs GameServer
	if err := json.Unmarshal(data, &gs); err != nil {
		return nil, fmt.Errorf("gameserver: local state file: %w", err)
	}
	if gs.Name == "" {
		gs.Name = "local"
	}
	if gs.Namespace == "" {
		gs.Namespace = "default"
	}
	if gs.State == "" {
		gs.State = Starting
	}
	return &gs, nil
}

// refresh adopts an edit of the state file. Caller holds mu.
func (l *localStore) refresh() {
	if l.file == "" {
		return
	}
	data, err := os.ReadFile(l.file)
	if err != nil || bytes.Equal(data, l.seen) {
		return
	}
	l.seen = data
	gs, err := parseLocal(data)
	if err != nil {
		l.log.Warn("gameserver: ignoring the edited local state file", "err", err)
		return
	}
	l.pod = toPod(gs)
	l.changedLocked("file edited")
}

// changedLocked bumps the version, wakes watchers and logs. Caller holds mu.
func (l *localStore) changedLocked(why string) {
	l.rv++
	l.pod.ResourceVersion = strconv.FormatUint(l.rv, 10)
	close(l.changed)
	l.changed = make(chan struct{})
	gs := fromPod(l.pod)
	level := slog.LevelInfo
	if why == "health" {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "gameserver: local state", "why", why, "state", gs.State, "labels", gs.Labels, "allocation", gs.Allocation)
}

// persist writes the state file (atomically). Caller holds mu.
func (l *localStore) persist() error {
	if l.file == "" {
		return nil
	}
	data, err := json.MarshalIndent(fromPod(l.pod), "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp := filepath.Join(filepath.Dir(l.file), "."+filepath.Base(l.file)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("gameserver: local state file: %w", err)
	}
	if err := os.Rename(tmp, l.file); err != nil {
		return fmt.Errorf("gameserver: local state file: %w", err)
	}
	l.seen = data
	return nil
}

func (l *localStore) get(ctx context.Context) (*corev1.Pod, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh()
	return l.pod.DeepCopy(), nil
}

func (l *localStore) patch(ctx context.Context, p *podPatch) (*corev1.Pod, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh()
	if p.resourceVersion != "" && p.resourceVersion != l.pod.ResourceVersion {
		return nil, errConflict
	}
	apply(&l.pod.Labels, p.labels)
	apply(&l.pod.Annotations, p.annotations)
	why := "update"
	if _, ok := p.annotations[gamev1.AnnotationHealth]; ok && len(p.annotations) == 1 && len(p.labels) == 0 {
		why = "health"
	}
	l.changedLocked(why)
	if err := l.persist(); err != nil {
		return nil, err
	}
	return l.pod.DeepCopy(), nil
}

func apply(m *map[string]string, change map[string]*string) {
	for k, v := range change {
		if v == nil {
			delete(*m, k)
			continue
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = *v
	}
}

func (l *localStore) watch(ctx context.Context, fn func(*corev1.Pod)) error {
	var tick <-chan time.Time
	if l.file != "" {
		t := time.NewTicker(l.poll)
		defer t.Stop()
		tick = t.C
	}
	delivered := ""
	for {
		l.mu.Lock()
		l.refresh()
		pod, changed := l.pod.DeepCopy(), l.changed
		l.mu.Unlock()
		if pod.ResourceVersion != delivered {
			delivered = pod.ResourceVersion
			fn(pod)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick:
		}
	}
}

// toPod is the pod a GameServer would be (local mode only).
func toPod(gs *GameServer) *corev1.Pod {
	labels := map[string]string{gamev1.LabelState: string(gs.State)}
	if gs.Set != "" {
		labels[gamev1.LabelSet] = gs.Set
	}
	if gs.GameVersion != "" {
		labels[gamev1.LabelGameVersion] = gs.GameVersion
	}
	for k, v := range gs.Labels {
		labels[gamev1.LabelUserPrefix+strings.TrimPrefix(k, gamev1.LabelUserPrefix)] = v
	}
	ann := map[string]string{}
	if gs.Allocation != nil {
		b, _ := json.Marshal(gs.Allocation)
		ann[gamev1.AnnotationAllocation] = string(b)
	}
	if !gs.AllocatedAt.IsZero() {
		ann[gamev1.AnnotationAllocatedAt] = gs.AllocatedAt.UTC().Format(time.RFC3339Nano)
	}
	if !gs.LastHealth.IsZero() {
		ann[gamev1.AnnotationHealth] = gs.LastHealth.UTC().Format(time.RFC3339Nano)
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: gs.Name, Namespace: gs.Namespace, Labels: labels, Annotations: ann}}
}
