// Package operator reconciles GameServerSets: it keeps each set's headless
// Service and its game-server pods as the spec asks, starting, replacing and
// removing servers without ever deleting an Allocated one. All state it acts
// on lives on the pods, so a restarted operator carries on where the last
// one stopped.
package operator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

const (
	// FieldOwner is the field manager of everything the operator writes.
	FieldOwner = "rally-operator"
	// Finalizer holds a deleted GameServerSet until its Allocated servers
	// have ended their games.
	Finalizer = "game.rally.dev/allocated-servers"
	// ControllerName names the controller, its Events and its metrics.
	ControllerName = "gameserverset"
)

// Options tune the reconciler; zero values take the defaults.
type Options struct {
	// MaxParallel bounds how many pods one pass of one set creates, and
	// separately deletes, at once (default 16). What is left waits for the
	// next pass, once the cache shows the first batch.
	MaxParallel int
	// Workers is how many sets are reconciled at once (default 4).
	Workers int
	// Registerer receives the rally_operator_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// TracerProvider makes the reconcile spans; nil means the global one.
	TracerProvider trace.TracerProvider
}

// Reconciler turns GameServerSets into pods and a headless Service.
type Reconciler struct {
	client client.Client
	// reader reads around the cache, for objects it filters out.
	reader   client.Reader
	recorder events.EventRecorder
	opts     Options
	exp      *expectations
	m        *metrics
	tracer   trace.Tracer

	mu sync.Mutex
	// taken are ordinals whose pod name is held by a pod that is not the
	// set's (so creating it keeps failing with AlreadyExists).
	taken map[types.NamespacedName]map[int]bool
}

// CacheOptions restrict the manager's informers to game-server pods and
// Services (those with the game.rally.dev/set label): the operator never
// needs the rest of the cluster's pods in memory.
func CacheOptions() cache.Options {
	sel := labels.NewSelector()
	req, _ := labels.NewRequirement(gamev1.LabelSet, "exists", nil)
	sel = sel.Add(*req)
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:     {Label: sel},
		&corev1.Service{}: {Label: sel},
	}}
}

// New returns a Reconciler using mgr's client and event recorder.
func New(mgr ctrl.Manager, opts Options) *Reconciler {
	if opts.MaxParallel <= 0 {
		opts.MaxParallel = 16
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Reconciler{
		client:   mgr.GetClient(),
		reader:   mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder(FieldOwner),
		opts:     opts,
		exp:      newExpectations(30 * time.Second),
		m:        newMetrics(opts.Registerer),
		tracer:   tp.Tracer("rally/operator"),
		taken:    map[types.NamespacedName]map[int]bool{},
	}
}

// SetupWithManager registers the controller: it watches GameServerSets and
// the pods and Services they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&gamev1.GameServerSet{}).
		Owns(&corev1.Pod{}, builder.WithPredicates(notJustAPing())).
		Owns(&corev1.Service{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.opts.Workers}).
		Complete(r)
}

// notJustAPing drops pod updates that only move the health-ping
// annotation: with hundreds of servers pinging every few seconds they would
// keep the queue busy for nothing. Missed pings are found by the deadline
// each pass schedules from the first ping on, on the cache, which sees
// every update anyway.
func notJustAPing() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Pod)
		n, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		if o.Annotations[gamev1.AnnotationHealth] == n.Annotations[gamev1.AnnotationHealth] ||
			o.Annotations[gamev1.AnnotationHealth] == "" {
			// Not a ping, or the first one: that starts the deadline.
			return true
		}
		oc, nc := o.DeepCopy(), n.DeepCopy()
		for _, p := range []*corev1.Pod{oc, nc} {
			delete(p.Annotations, gamev1.AnnotationHealth)
			p.ResourceVersion = ""
			p.ManagedFields = nil
		}
		return !equalJSON(oc, nc)
	}}
}

// Reconcile brings one GameServerSet one step closer to its spec. It is
// level-triggered: it reads everything from the pods and the spec each time
// and may be called any number of times.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	ctx, span := r.tracer.Start(ctx, "operator.Reconcile", trace.WithAttributes(
		attribute.String("k8s.namespace.name", req.Namespace),
		attribute.String("rally.gameserverset", req.Name),
	))
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		r.m.reconciles.WithLabelValues(result).Inc()
		span.End()
	}()

	var set gamev1.GameServerSet
	if err := r.client.Get(ctx, req.NamespacedName, &set); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	pods, names, err := r.ownedPods(ctx, &set)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := &pass{r: r, set: &set, key: req.NamespacedName, all: pods, names: names, now: time.Now()}
	p.servers = p.liveServers()
	span.SetAttributes(attribute.Int("rally.gameservers", len(p.servers)))

	if set.DeletionTimestamp != nil {
		return p.terminate(ctx)
	}
	if !controllerutil.ContainsFinalizer(&set, Finalizer) {
		orig := set.DeepCopy()
		controllerutil.AddFinalizer(&set, Finalizer)
		if err := r.client.Patch(ctx, &set, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	return p.run(ctx)
}

// forget drops what the reconciler remembers of a set that is gone.
func (r *Reconciler) forget(key types.NamespacedName) {
	r.exp.drop(key)
	r.m.servers.DeletePartialMatch(prometheus.Labels{"namespace": key.Namespace, "set": key.Name})
	r.mu.Lock()
	delete(r.taken, key)
	r.mu.Unlock()
}

// ownedPods lists the set's pods from the cache, those being deleted too,
// and the names of every pod labelled with the set's name (a set deleted
// and made again may find its predecessor's pods still there).
func (r *Reconciler) ownedPods(ctx context.Context, set *gamev1.GameServerSet) ([]*corev1.Pod, []string, error) {
	var list corev1.PodList
	if err := r.client.List(ctx, &list, client.InNamespace(set.Namespace), client.MatchingLabels{gamev1.LabelSet: set.Name}); err != nil {
		return nil, nil, err
	}
	out := make([]*corev1.Pod, 0, len(list.Items))
	names := make([]string, 0, len(list.Items))
	for i := range list.Items {
		names = append(names, list.Items[i].Name)
		if metav1.IsControlledBy(&list.Items[i], set) {
			out = append(out, &list.Items[i])
		}
	}
	return out, names, nil
}

// pass is one reconcile of one set.
type pass struct {
	r       *Reconciler
	set     *gamev1.GameServerSet
	key     types.NamespacedName
	all     []*corev1.Pod // the set's pods, being deleted or not
	names   []string      // names taken by pods with the set's label
	servers []*server     // the live ones
	now     time.Time
	hash    string

	// What the pass did and saw, for the status.
	removed       map[*server]bool
	created       int
	createTried   bool
	createErr     error
	serviceIssue  string
	serviceReason string
	waiting       bool // expectations not met yet: nothing was changed
	waitAllocated int
	nextCheck     time.Time
}

func (p *pass) liveServers() []*server {
	p.hash = templateHash(&p.set.Spec.Template)
	var out []*server
	for _, pod := range p.all {
		if pod.DeletionTimestamp != nil {
			continue
		}
		st := stateOf(pod)
		out = append(out, &server{
			pod:     pod,
			ordinal: ordinalOf(p.set.Name, pod.Name),
			state:   st,
			current: pod.Labels[gamev1.LabelGameVersion] == p.set.Spec.GameVersion && pod.Labels[gamev1.LabelTemplateHash] == p.hash,
			ready:   st == gamev1.StateReady && podReady(pod),
		})
	}
	return out
}

// run is a pass over a set that is not being deleted.
func (p *pass) run(ctx context.Context) (ctrl.Result, error) {
	r := p.r
	p.removed = map[*server]bool{}
	var errs []error
	// A Service that cannot be written is reported, but does not hold the
	// servers back: they run without their DNS names meanwhile.
	if issue, err := r.ensureService(ctx, p.set); err != nil {
		errs = append(errs, err)
		p.serviceReason, p.serviceIssue = "ServiceFailed", truncate(err.Error())
	} else if issue != "" {
		p.serviceReason, p.serviceIssue = "ServiceConflict", issue
	}
	p.checkHealth(ctx)

	if !r.exp.satisfied(p.key, p.all) {
		p.waiting = true
	} else {
		pl := planSet(p.servers, resolveBounds(&p.set.Spec), p.nodeUsage(ctx))
		p.waitAllocated = pl.waitingAllocated
		conflicts, err := p.remove(ctx, pl.remove)
		if err != nil {
			errs = append(errs, err)
		}
		// A removal the API server refused (the pod changed: maybe it was
		// just allocated) leaves the plan's arithmetic wrong: start nothing
		// until the next pass has looked again.
		if conflicts == 0 && err == nil && pl.create > 0 {
			if err := p.create(ctx, pl.create); err != nil {
				errs = append(errs, err)
			}
		}
		if conflicts > 0 {
			p.requeueIn(250 * time.Millisecond)
		}
	}
	if err := p.writeStatus(ctx); err != nil {
		errs = append(errs, err)
	}
	if p.waiting {
		p.requeueIn(time.Second)
	}
	return p.result(), errors.Join(errs...)
}

func (p *pass) requeueIn(d time.Duration) {
	at := p.now.Add(d)
	if p.nextCheck.IsZero() || at.Before(p.nextCheck) {
		p.nextCheck = at
	}
}

func (p *pass) result() ctrl.Result {
	if p.nextCheck.IsZero() {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: max(10*time.Millisecond, time.Until(p.nextCheck))}
}

// nodeUsage counts the live game servers of every set on each node, for the
// Packed and Distributed scale-down orders; it lists only when asked.
func (p *pass) nodeUsage(ctx context.Context) func(string) int {
	var counts map[string]int
	return func(node string) int {
		if counts == nil {
			counts = map[string]int{}
			var list corev1.PodList
			req, _ := labels.NewRequirement(gamev1.LabelSet, "exists", nil)
			if err := p.r.client.List(ctx, &list, client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*req)}); err == nil {
				for i := range list.Items {
					if pod := &list.Items[i]; pod.DeletionTimestamp == nil && pod.Spec.NodeName != "" {
						counts[pod.Spec.NodeName]++
					}
				}
			}
		}
		return counts[node]
	}
}

// checkHealth marks Unhealthy the servers whose pings stopped, that never
// became Ready in time, or whose pod failed, and schedules the next check.
func (p *pass) checkHealth(ctx context.Context) {
	h := p.set.Spec.Health
	for _, s := range p.servers {
		cause, note, deadline := verdict(s, h, p.now)
		if cause == "" {
			if !deadline.IsZero() {
				// A little after the deadline, so the check finds it passed.
				p.requeueIn(deadline.Sub(p.now) + 50*time.Millisecond)
			}
			continue
		}
		if err := p.r.markUnhealthy(ctx, p.set, s, cause, note); err != nil {
			log.FromContext(ctx).Info("mark unhealthy", "pod", s.pod.Name, "error", err.Error())
			p.requeueIn(250 * time.Millisecond)
		}
	}
}

// verdict judges one server's health: a cause when it is Unhealthy, else
// the time it must be judged again (zero for never).
func verdict(s *server, h gamev1.HealthSpec, now time.Time) (cause, note string, next time.Time) {
	if s.state == gamev1.StateShutdown || s.state == gamev1.StateUnhealthy {
		return "", "", time.Time{}
	}
	if ph := s.pod.Status.Phase; ph == corev1.PodFailed || ph == corev1.PodSucceeded {
		return "pod-failed", fmt.Sprintf("pod %s is %s", s.pod.Name, ph), time.Time{}
	}
	if h.Disabled {
		return "", "", time.Time{}
	}
	switch s.state {
	case gamev1.StateReady, gamev1.StateAllocated:
		last, err := time.Parse(time.RFC3339Nano, s.pod.Annotations[gamev1.AnnotationHealth])
		if err != nil {
			// No ping yet (or none readable): the SDK has not started
			// pinging, which is not a failure.
			return "", "", time.Time{}
		}
		period := max(time.Duration(max(1, h.PeriodSeconds))*time.Second, pingPeriod(s.pod))
		grace := period * time.Duration(max(1, h.FailureThreshold))
		if deadline := last.Add(grace); now.After(deadline) {
			return "missed-pings", fmt.Sprintf("no health ping from %s for %s (allowed %s)", s.pod.Name, now.Sub(last).Round(time.Millisecond), grace), time.Time{}
		} else {
			return "", "", deadline
		}
	case gamev1.StateStarting:
		if h.StartupTimeoutSeconds <= 0 {
			return "", "", time.Time{}
		}
		timeout := time.Duration(h.StartupTimeoutSeconds) * time.Second
		deadline := s.pod.CreationTimestamp.Add(timeout)
		if now.After(deadline) {
			return "startup-timeout", fmt.Sprintf("%s did not become Ready within %s", s.pod.Name, timeout), time.Time{}
		}
		return "", "", deadline
	}
	return "", "", time.Time{}
}

// markUnhealthy sets the pod's state to Unhealthy, only if the pod is still
// as the pass read it (a fresh ping or an allocation wins).
func (r *Reconciler) markUnhealthy(ctx context.Context, set *gamev1.GameServerSet, s *server, cause, note string) error {
	orig := s.pod
	pod := orig.DeepCopy()
	pod.Labels[gamev1.LabelState] = string(gamev1.StateUnhealthy)
	if err := r.client.Patch(ctx, pod, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldOwner)); err != nil {
		return err
	}
	r.m.unhealthy.WithLabelValues(cause).Inc()
	r.recorder.Eventf(set, pod, corev1.EventTypeWarning, "Unhealthy", "MarkUnhealthy", "%s: %s", cause, note)
	s.pod, s.state, s.ready = pod, gamev1.StateUnhealthy, false
	return nil
}

// remove deletes the planned servers, at most MaxParallel at once, each
// only if it is unchanged since it was read: a server allocated in the
// meantime is never deleted. It returns how many were refused that way.
func (p *pass) remove(ctx context.Context, rs []removal) (conflicts int, err error) {
	r := p.r
	if len(rs) > r.opts.MaxParallel {
		rs = rs[:r.opts.MaxParallel]
		r.m.limited.Inc()
		p.requeueIn(time.Second)
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, rm := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := rm.srv.pod
			uid, rv := pod.UID, pod.ResourceVersion
			r.exp.expectDelete(p.key, uid)
			derr := r.client.Delete(ctx, pod, client.Preconditions{UID: &uid, ResourceVersion: &rv})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case derr == nil, apierrors.IsNotFound(derr):
				p.removed[rm.srv] = true
				r.m.deleted.WithLabelValues(rm.reason).Inc()
				r.recorder.Eventf(p.set, pod, corev1.EventTypeNormal, "SuccessfulDelete", "Delete", "deleted game server %s (%s, state %s)", pod.Name, rm.reason, rm.srv.state)
			case apierrors.IsConflict(derr):
				r.exp.forgetDelete(p.key, uid)
				r.m.deleteRefused.Inc()
				conflicts++
			default:
				r.exp.forgetDelete(p.key, uid)
				r.recorder.Eventf(p.set, pod, corev1.EventTypeWarning, "FailedDelete", "Delete", "delete game server %s: %v", pod.Name, derr)
				errs = append(errs, fmt.Errorf("delete pod %s: %w", pod.Name, derr))
			}
		}()
	}
	wg.Wait()
	return conflicts, errors.Join(errs...)
}

// create starts n new servers on the lowest free ordinals, at most
// MaxParallel at once.
func (p *pass) create(ctx context.Context, n int) error {
	r := p.r
	if n > r.opts.MaxParallel {
		n = r.opts.MaxParallel
		r.m.limited.Inc()
		p.requeueIn(time.Second)
	}
	used := map[int]bool{}
	for _, name := range p.names {
		used[ordinalOf(p.set.Name, name)] = true
	}
	for _, name := range r.exp.pendingNames(p.key) {
		used[ordinalOf(p.set.Name, name)] = true
	}
	r.mu.Lock()
	for o := range r.taken[p.key] {
		used[o] = true
	}
	r.mu.Unlock()

	p.createTried = true
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, ord := range freeOrdinals(used, n) {
		pod := newPod(p.set, ord, p.hash)
		r.exp.expectCreate(p.key, pod.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cerr := r.client.Create(ctx, pod, client.FieldOwner(FieldOwner))
			if apierrors.IsAlreadyExists(cerr) {
				cerr = r.nameTaken(ctx, p.set, ord, pod.Name)
			}
			mu.Lock()
			defer mu.Unlock()
			if cerr != nil {
				r.exp.forgetCreate(p.key, pod.Name)
				r.m.createFailures.Inc()
				r.recorder.Eventf(p.set, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "create game server %s: %v", pod.Name, cerr)
				errs = append(errs, fmt.Errorf("create pod %s: %w", pod.Name, cerr))
				return
			}
			p.created++
			r.m.created.Inc()
			r.recorder.Eventf(p.set, pod, corev1.EventTypeNormal, "SuccessfulCreate", "Create", "created game server %s", pod.Name)
		}()
	}
	wg.Wait()
	p.createErr = errors.Join(errs...)
	return p.createErr
}

// nameTaken handles AlreadyExists on a create: the set's own pod that the
// cache has not shown yet is fine; someone else's pod under that name
// blocks the ordinal from now on.
func (r *Reconciler) nameTaken(ctx context.Context, set *gamev1.GameServerSet, ord int, name string) error {
	var pod corev1.Pod
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: set.Namespace, Name: name}, &pod); err == nil && metav1.IsControlledBy(&pod, set) {
		return nil
	}
	key := types.NamespacedName{Namespace: set.Namespace, Name: set.Name}
	r.mu.Lock()
	if r.taken[key] == nil {
		r.taken[key] = map[int]bool{}
	}
	r.taken[key][ord] = true
	r.mu.Unlock()
	return fmt.Errorf("a pod named %s exists and is not this set's: ordinal %d is skipped", name, ord)
}

// terminate is a pass over a set being deleted: every server that is not
// Allocated goes at once, Allocated ones when their games end; then the
// Service goes and the finalizer is lifted.
func (p *pass) terminate(ctx context.Context) (ctrl.Result, error) {
	r := p.r
	p.removed = map[*server]bool{}
	if !controllerutil.ContainsFinalizer(p.set, Finalizer) {
		return ctrl.Result{}, nil
	}
	p.checkHealth(ctx)
	var rs []removal
	allocated := 0
	for _, s := range p.servers {
		switch s.state {
		case gamev1.StateAllocated:
			allocated++
		case gamev1.StateShutdown:
			rs = append(rs, removal{s, reasonShutdown})
		case gamev1.StateUnhealthy:
			rs = append(rs, removal{s, reasonUnhealthy})
		default:
			rs = append(rs, removal{s, reasonTerminating})
		}
	}
	conflicts, err := p.remove(ctx, rs)
	if err != nil {
		return ctrl.Result{}, err
	}
	left := 0
	for _, s := range p.servers {
		if !p.removed[s] {
			left++
		}
	}
	if left == 0 && conflicts == 0 {
		if err := r.deleteService(ctx, p.set); err != nil {
			return ctrl.Result{}, err
		}
		orig := p.set.DeepCopy()
		controllerutil.RemoveFinalizer(p.set, Finalizer)
		if err := r.client.Patch(ctx, p.set, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
		}
		r.forget(p.key)
		return ctrl.Result{}, nil
	}
	if conflicts > 0 {
		p.requeueIn(250 * time.Millisecond)
	}
	p.waitAllocated = allocated
	if err := p.writeStatus(ctx); err != nil {
		return ctrl.Result{}, err
	}
	return p.result(), nil
}
