package operator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/operator"
	"github.com/rallyhq/rally/internal/testsvc"
)

func TestMain(m *testing.M) {
	var h slog.Handler = slog.NewTextHandler(io.Discard, nil)
	if os.Getenv("RALLY_TEST_LOG") != "" {
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	ctrl.SetLogger(logr.FromSlogHandler(h))
	os.Exit(testsvc.KubeMain(m))
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := gamev1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// env is one test's corner of the shared API server: a namespace, a
// direct client, a kubelet stand-in and a recorder of every pod change.
type env struct {
	t       *testing.T
	cfg     *rest.Config
	c       client.WithWatch
	ns      string
	kubelet *kubelet
	rec     *recorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := testsvc.SharedKube(t, "deploy/crds")
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "gss-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, c: c, ns: ns.Name}
	e.rec = startRecorder(t, c, ns.Name)
	e.kubelet = startKubelet(t, c, ns.Name)
	t.Cleanup(func() {
		for _, v := range e.rec.violations() {
			t.Error(v)
		}
	})
	return e
}

// startOperator runs the controller in a manager of its own, watching only
// the test's namespace, until the returned stop is called (or the test ends).
func (e *env) startOperator(opts operator.Options) (stop func()) {
	e.t.Helper()
	skip := true
	cacheOpts := operator.CacheOptions()
	cacheOpts.DefaultNamespaces = map[string]cache.Config{e.ns: {}}
	mgr, err := ctrl.NewManager(e.cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if err := operator.New(mgr, opts).SetupWithManager(mgr); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("manager: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// newSet is a GameServerSet of n servers with tight health settings.
func (e *env) newSet(name string, n int32, mutate ...func(*gamev1.GameServerSet)) *gamev1.GameServerSet {
	e.t.Helper()
	set := &gamev1.GameServerSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: gamev1.GameServerSetSpec{
			Replicas:    &n,
			GameVersion: "v1",
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "match"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "game", Image: "example.com/match:1",
					Ports: []corev1.ContainerPort{{Name: "game", ContainerPort: 7777, Protocol: corev1.ProtocolUDP}},
				}}},
			},
			Health: gamev1.HealthSpec{PeriodSeconds: 1, FailureThreshold: 2, StartupTimeoutSeconds: 600},
		},
	}
	for _, m := range mutate {
		m(set)
	}
	if err := e.c.Create(context.Background(), set); err != nil {
		e.t.Fatalf("create set: %v", err)
	}
	return set
}

func (e *env) getSet(name string) *gamev1.GameServerSet {
	e.t.Helper()
	var set gamev1.GameServerSet
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: name}, &set); err != nil {
		e.t.Fatal(err)
	}
	return &set
}

// updateSet changes a set's spec, retrying on conflicts.
func (e *env) updateSet(name string, mutate func(*gamev1.GameServerSet)) {
	e.t.Helper()
	for {
		set := e.getSet(name)
		mutate(set)
		err := e.c.Update(context.Background(), set)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			e.t.Fatalf("update set: %v", err)
		}
	}
}

// pods lists the set's pods that are not being deleted, by name.
func (e *env) pods(set string) []corev1.Pod {
	e.t.Helper()
	var list corev1.PodList
	if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns), client.MatchingLabels{gamev1.LabelSet: set}); err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func podsIn(pods []corev1.Pod, state gamev1.GameServerState) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if p.Labels[gamev1.LabelState] == string(state) {
			out = append(out, p)
		}
	}
	return out
}

func names(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s(%s,%s)", p.Name, p.Labels[gamev1.LabelState], p.Labels[gamev1.LabelGameVersion]))
	}
	return strings.Join(s, " ")
}

// eventually polls cond until it holds or the deadline passes.
func (e *env) eventually(what string, timeout time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The game server's side, as the SDK does it: patches on its own pod, each
// carrying the resourceVersion it read (a conflict means someone else moved
// it first).

func (e *env) setState(name string, from, to gamev1.GameServerState) error {
	ctx := context.Background()
	var pod corev1.Pod
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: e.ns, Name: name}, &pod); err != nil {
		return err
	}
	if got := gamev1.GameServerState(pod.Labels[gamev1.LabelState]); got != from {
		return fmt.Errorf("pod %s is %s, not %s", name, got, from)
	}
	orig := pod.DeepCopy()
	pod.Labels[gamev1.LabelState] = string(to)
	if to == gamev1.StateAllocated {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[gamev1.AnnotationAllocation] = `{"match":"m-1"}`
		pod.Annotations[gamev1.AnnotationAllocatedAt] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	return e.c.Patch(ctx, &pod, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func (e *env) mustSetState(name string, from, to gamev1.GameServerState) {
	e.t.Helper()
	for i := 0; ; i++ {
		err := e.setState(name, from, to)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || i > 20 {
			e.t.Fatalf("%s -> %s: %v", name, to, err)
		}
	}
}

// ping writes a health ping on the pod, as the SDK's Health does.
func (e *env) ping(name string) error {
	var pod corev1.Pod
	pod.Name, pod.Namespace = name, e.ns
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, gamev1.AnnotationHealth, time.Now().UTC().Format(time.RFC3339Nano))
	return e.c.Patch(context.Background(), &pod, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// kubelet plays the kubelet's part, which envtest has not: every new pod of
// the namespace is marked Running with ready containers. For the sets
// named with autoReady, it also plays the game process calling the SDK's
// Ready.
type kubelet struct {
	auto sync.Map // set name -> true
	// stuck names containers to report as waiting with this reason.
	stuck atomic.Value // string
}

func startKubelet(t *testing.T, c client.WithWatch, ns string) *kubelet {
	k := &kubelet{}
	k.stuck.Store("")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchPods(ctx, c, ns, func(typ watch.EventType, pod *corev1.Pod) {
			if typ == watch.Deleted || pod.DeletionTimestamp != nil {
				return
			}
			if pod.Status.Phase == "" || pod.Status.Phase == corev1.PodPending {
				k.run(ctx, c, pod)
			}
			if _, ok := k.auto.Load(pod.Labels[gamev1.LabelSet]); ok && pod.Labels[gamev1.LabelState] == string(gamev1.StateStarting) {
				orig := pod.DeepCopy()
				pod.Labels[gamev1.LabelState] = string(gamev1.StateReady)
				// A conflict is fine: the next event of this pod retries.
				c.Patch(ctx, pod, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

// autoReady makes the game servers of set report Ready as soon as they run.
func (k *kubelet) autoReady(set string) { k.auto.Store(set, true) }

func (k *kubelet) run(ctx context.Context, c client.Client, pod *corev1.Pod) {
	now := metav1.Now()
	for i := 0; i < 20; i++ {
		p := pod.DeepCopy()
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = "10.0.0.1"
		reason := k.stuck.Load().(string)
		ready := corev1.ConditionTrue
		if reason != "" {
			ready = corev1.ConditionFalse
		}
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		}
		p.Status.ContainerStatuses = nil
		for _, ctr := range p.Spec.Containers {
			cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, Ready: reason == "", Started: ptr(reason == "")}
			if reason != "" {
				cs.RestartCount = 5
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: "back-off 5m0s restarting failed container"}
			} else {
				cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
			}
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, cs)
		}
		err := c.Status().Update(ctx, p)
		if err != nil && os.Getenv("RALLY_TEST_LOG") != "" {
			fmt.Fprintf(os.Stderr, "kubelet: %s: %v\n", pod.Name, err)
		}
		if err == nil || apierrors.IsNotFound(err) || ctx.Err() != nil {
			return
		}
		if apierrors.IsConflict(err) {
			if c.Get(ctx, client.ObjectKeyFromObject(pod), pod) != nil {
				return
			}
			if pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending {
				return
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// watchPods calls fn for every pod event of the namespace until ctx ends,
// re-opening the watch when the API server closes it.
func watchPods(ctx context.Context, c client.WithWatch, ns string, fn func(watch.EventType, *corev1.Pod)) {
	rv := ""
	for ctx.Err() == nil {
		var list corev1.PodList
		if rv == "" {
			if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for i := range list.Items {
				fn(watch.Added, &list.Items[i])
			}
			rv = list.ResourceVersion
		}
		w, err := c.Watch(ctx, &corev1.PodList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
		if err != nil {
			rv = ""
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				rv = ""
				break
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			rv = pod.ResourceVersion
			fn(ev.Type, pod)
		}
		w.Stop()
	}
}

// recorder follows every pod of the namespace and checks the promise the
// operator makes: an Allocated server is never deleted. It also tracks how
// many servers were available (Ready and kubelet-ready, or Allocated) at
// the low point of a window.
type recorder struct {
	mu        sync.Mutex
	pods      map[types.UID]*corev1.Pod
	flagged   map[types.UID]bool
	bad       []string
	deleted   []string
	watching  bool
	minAvail  int
	windowSet string
}

func startRecorder(t *testing.T, c client.WithWatch, ns string) *recorder {
	r := &recorder{pods: map[types.UID]*corev1.Pod{}, flagged: map[types.UID]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchPods(ctx, c, ns, r.observe)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *recorder) observe(typ watch.EventType, pod *corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.pods[pod.UID]
	if typ == watch.Deleted || (pod.DeletionTimestamp != nil && (prev == nil || prev.DeletionTimestamp == nil)) {
		// The state the pod had when its deletion began.
		state := pod.Labels[gamev1.LabelState]
		if prev != nil {
			state = prev.Labels[gamev1.LabelState]
		}
		if (state == string(gamev1.StateAllocated) || pod.Labels[gamev1.LabelState] == string(gamev1.StateAllocated)) && !r.flagged[pod.UID] {
			r.flagged[pod.UID] = true
			r.bad = append(r.bad, fmt.Sprintf("Allocated game server %s was deleted", pod.Name))
		}
		if prev == nil || prev.DeletionTimestamp == nil {
			r.deleted = append(r.deleted, pod.Name)
		}
	}
	if typ == watch.Deleted {
		delete(r.pods, pod.UID)
	} else {
		r.pods[pod.UID] = pod.DeepCopy()
	}
	if r.watching {
		if n := r.availableLocked(r.windowSet); n < r.minAvail {
			r.minAvail = n
		}
	}
}

func (r *recorder) availableLocked(set string) int {
	n := 0
	for _, p := range r.pods {
		if p.DeletionTimestamp != nil || p.Labels[gamev1.LabelSet] != set {
			continue
		}
		switch gamev1.GameServerState(p.Labels[gamev1.LabelState]) {
		case gamev1.StateAllocated:
			n++
		case gamev1.StateReady:
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					n++
				}
			}
		}
	}
	return n
}

// openWindow starts tracking the fewest available servers of set.
func (r *recorder) openWindow(set string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watching, r.windowSet = true, set
	r.minAvail = r.availableLocked(set)
}

// closeWindow stops tracking and returns the low point.
func (r *recorder) closeWindow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watching = false
	return r.minAvail
}

func (r *recorder) available(set string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.availableLocked(set)
}

func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

func (r *recorder) wasDeleted(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.deleted {
		if d == name {
			return true
		}
	}
	return false
}
