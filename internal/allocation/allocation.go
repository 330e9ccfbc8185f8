// Package allocation hands out Ready game servers of rally-operator's
// GameServerSets: a request names a set (or any), label selectors in
// preference order and metadata; the allocator picks a Ready pod from an
// informer-fed index and marks it Allocated with a write that carries the
// pod's resourceVersion, so the API server refuses it if anyone changed the
// pod first: no server is ever handed out twice, across any number of
// allocator replicas. A refused write moves on to another candidate.
//
// It is served by rally-operator over gRPC (rally.allocation.v1) and REST
// (POST /v1/gameserverallocations); Client calls it, and MatchAllocator
// plugs it into the matchmaker.
package allocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
	"github.com/rallyhq/rally/internal/allocation/allocclient"
)

// Errors of Allocate, mapped to gRPC codes by the service.
// The refusals are shared with the client (package allocclient), so
// errors.Is works the same on either side of the wire.
var (
	ErrInvalid    = allocclient.ErrInvalid
	ErrNoServer   = allocclient.ErrNoServer
	ErrContention = allocclient.ErrContention
)

var _ allocclient.Interface = (*Allocator)(nil)

// Limits on a request.
const (
	maxSelectors     = 16
	maxMetadataBytes = 64 << 10
)

// Options configures the allocator and its servers.
type Options struct {
	// GRPCAddr and HTTPAddr are where AddToManager serves the gRPC and
	// REST APIs; empty disables one. Defaults: ":7070" and ":7071".
	GRPCAddr string
	HTTPAddr string
	// Token, when set, is required from callers as "authorization: Bearer
	// <token>" (gRPC metadata or HTTP header).
	Token string
	// DefaultNamespace is used for requests without a namespace. Default
	// "default".
	DefaultNamespace string
	// ClusterDomain, when set (e.g. "cluster.local"), makes addresses fully
	// qualified: <pod>.<set>.<ns>.svc.<domain>.
	ClusterDomain string
	// MaxConflicts bounds the races one request may lose before it fails
	// with ErrContention. Default 64.
	MaxConflicts int
	// Registerer receives the rally_allocation_* metrics; nil: none.
	Registerer prometheus.Registerer
	// TracerProvider makes the spans; nil: the global one.
	TracerProvider trace.TracerProvider
	Log            *slog.Logger
}

func (o *Options) defaults() {
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = "default"
	}
	if o.MaxConflicts <= 0 {
		o.MaxConflicts = 64
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
}

// Allocator allocates game servers. It reads candidates from its index
// (fed by a pod informer) and writes through the API server.
type Allocator struct {
	c      client.Client
	sets   client.Reader
	ix     *index
	reg    toolscache.ResourceEventHandlerRegistration
	opts   Options
	m      *metrics
	tracer trace.Tracer
	now    func() time.Time
}

// New returns an allocator that writes pods with c, learns about them from
// the pod informer of informers, and reads GameServerSets (for their
// ports) with sets, which may be nil (ports then come from the pod's
// containers). Call it before the informers start; Synced reports when the
// index holds the cluster's Ready servers.
func New(ctx context.Context, c client.Client, informers cache.Informers, sets client.Reader, opts Options) (*Allocator, error) {
	opts.defaults()
	inf, err := informers.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("allocation: pod informer: %w", err)
	}
	a := &Allocator{
		c: c, sets: sets, ix: newIndex(), opts: opts,
		tracer: opts.TracerProvider.Tracer("rally/allocation"),
		now:    time.Now,
	}
	if a.reg, err = inf.AddEventHandler(a.ix.handler()); err != nil {
		return nil, fmt.Errorf("allocation: pod informer: %w", err)
	}
	a.m = newMetrics(opts.Registerer, a.ix)
	return a, nil
}

// Synced reports whether the index has taken in the informer's first list.
func (a *Allocator) Synced() bool { return a.reg.HasSynced() }

// request is a validated AllocateRequest.
type request struct {
	namespace string
	scope     string
	selectors []labels.Selector
	metadata  map[string]string
	labels    map[string]string
}

// compile validates req.
func (a *Allocator) compile(req *allocationv1.AllocateRequest) (*request, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	r := &request{namespace: req.GetNamespace(), metadata: req.GetMetadata(), labels: req.GetLabels()}
	if r.namespace == "" {
		r.namespace = a.opts.DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(r.namespace); len(errs) > 0 {
		return nil, bad("namespace %q: %s", r.namespace, strings.Join(errs, "; "))
	}
	r.scope = r.namespace + "/"
	if set := req.GetSet(); set != "" {
		if errs := validation.IsDNS1123Label(set); len(errs) > 0 {
			return nil, bad("set %q: %s", set, strings.Join(errs, "; "))
		}
		r.scope += set
	}
	if len(req.GetSelectors()) > maxSelectors {
		return nil, bad("at most %d selectors", maxSelectors)
	}
	for i, s := range req.GetSelectors() {
		sel, err := compileSelector(s)
		if err != nil {
			return nil, bad("selectors[%d]: %v", i, err)
		}
		r.selectors = append(r.selectors, sel)
	}
	if len(r.selectors) == 0 {
		r.selectors = []labels.Selector{labels.Everything()}
	}
	size := 0
	for k, v := range r.metadata {
		if k == "" {
			return nil, bad("metadata keys must not be empty")
		}
		size += len(k) + len(v)
	}
	if size > maxMetadataBytes {
		return nil, bad("metadata is %d bytes, more than %d", size, maxMetadataBytes)
	}
	for k, v := range r.labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, bad("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if strings.HasPrefix(k, "game.rally.dev/") {
			return nil, bad("label key %q: the game.rally.dev/ prefix belongs to the operator", k)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, bad("label %q value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	return r, nil
}

var operators = map[string]selection.Operator{
	"In": selection.In, "NotIn": selection.NotIn, "Exists": selection.Exists, "DoesNotExist": selection.DoesNotExist,
}

func compileSelector(s *allocationv1.Selector) (labels.Selector, error) {
	sel := labels.NewSelector()
	add := func(key string, op selection.Operator, values []string) error {
		req, err := labels.NewRequirement(key, op, values)
		if err != nil {
			return err
		}
		sel = sel.Add(*req)
		return nil
	}
	for k, v := range s.GetMatchLabels() {
		if err := add(k, selection.Equals, []string{v}); err != nil {
			return nil, err
		}
	}
	if v := s.GetGameVersion(); v != "" {
		if err := add(gamev1.LabelGameVersion, selection.Equals, []string{v}); err != nil {
			return nil, err
		}
	}
	for _, e := range s.GetMatchExpressions() {
		op, ok := operators[e.GetOperator()]
		if !ok {
			return nil, fmt.Errorf("operator %q: want In, NotIn, Exists or DoesNotExist", e.GetOperator())
		}
		if err := add(e.GetKey(), op, e.GetValues()); err != nil {
			return nil, err
		}
	}
	return sel, nil
}

// Allocate picks a Ready game server matching req, trying the selectors
// in order, and marks it Allocated with req's metadata and labels.
func (a *Allocator) Allocate(ctx context.Context, req *allocationv1.AllocateRequest) (*allocationv1.AllocateResponse, error) {
	start := a.now()
	ctx, span := a.tracer.Start(ctx, "allocation.Allocate", trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()
	ns := req.GetNamespace()
	if ns == "" {
		ns = a.opts.DefaultNamespace
	}
	span.SetAttributes(attribute.String("k8s.namespace.name", ns), attribute.String("gameserverset.name", req.GetSet()))
	if id := req.GetMetadata()["match_id"]; id != "" {
		span.SetAttributes(attribute.String("match.id", id))
	}
	resp, conflicts, err := a.allocate(ctx, req)
	a.m.conflicts.Add(float64(conflicts))
	span.SetAttributes(attribute.Int("allocation.conflicts", conflicts))
	result := "allocated"
	switch {
	case err == nil:
		span.SetAttributes(attribute.String("gameserver.name", resp.GetName()), attribute.Int("allocation.selector_index", int(resp.GetSelectorIndex())))
	case errors.Is(err, ErrInvalid):
		result = "invalid"
	case errors.Is(err, ErrNoServer):
		result = "unallocated"
	case errors.Is(err, ErrContention):
		result = "contention"
	default:
		result = "error"
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	a.m.requests.WithLabelValues(result).Inc()
	a.m.seconds.WithLabelValues(result).Observe(a.now().Sub(start).Seconds())
	return resp, err
}

func (a *Allocator) allocate(ctx context.Context, req *allocationv1.AllocateRequest) (*allocationv1.AllocateResponse, int, error) {
	r, err := a.compile(req)
	if err != nil {
		return nil, 0, err
	}
	conflicts := 0
	for i, sel := range r.selectors {
		for {
			if err := ctx.Err(); err != nil {
				return nil, conflicts, err
			}
			pod := a.ix.claim(r.scope, sel)
			if pod == nil {
				break // next selector
			}
			at := a.now().UTC()
			err := a.mark(ctx, pod, r, at)
			a.ix.release(pod, err == nil || errors.Is(err, errLost))
			if errors.Is(err, errLost) {
				conflicts++
				if conflicts >= a.opts.MaxConflicts {
					return nil, conflicts, fmt.Errorf("%w: lost %d races", ErrContention, conflicts)
				}
				continue
			}
			if err != nil {
				return nil, conflicts, err
			}
			return a.response(ctx, pod, i, at), conflicts, nil
		}
	}
	return nil, conflicts, ErrNoServer
}

// errLost: another writer changed the pod first.
var errLost = errors.New("allocation: lost the race")

// mark writes Ready -> Allocated as an update of the version of pod the
// index holds: the API server applies it only if the pod is still at that
// resourceVersion. An update (sent as protobuf) costs the API server less
// than a merge patch, which it must apply to a JSON rendering of the pod.
// It relies on the informer holding whole pods (no cache transform that
// drops fields), as the operator's cache does.
func (a *Allocator) mark(ctx context.Context, pod *corev1.Pod, r *request, at time.Time) error {
	meta := r.metadata
	if meta == nil {
		meta = map[string]string{}
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	up := pod.DeepCopy()
	// Left out, the API server keeps the pod's managed fields as they are.
	up.ManagedFields = nil
	for k, v := range r.labels {
		up.Labels[k] = v
	}
	up.Labels[gamev1.LabelState] = string(gamev1.StateAllocated)
	if up.Annotations == nil {
		up.Annotations = map[string]string{}
	}
	up.Annotations[gamev1.AnnotationAllocation] = string(metaJSON)
	up.Annotations[gamev1.AnnotationAllocatedAt] = at.Format(time.RFC3339Nano)
	err = a.c.Update(ctx, up)
	switch {
	case err == nil:
		return nil
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return errLost
	}
	return fmt.Errorf("allocation: mark %s/%s Allocated: %w", pod.Namespace, pod.Name, err)
}

// response describes the allocated pod (the index's version, from before
// the write: name, address and ports do not change).
func (a *Allocator) response(ctx context.Context, pod *corev1.Pod, selector int, at time.Time) *allocationv1.AllocateResponse {
	set := pod.Labels[gamev1.LabelSet]
	addr := pod.Name + "." + set + "." + pod.Namespace + ".svc"
	if a.opts.ClusterDomain != "" {
		addr += "." + a.opts.ClusterDomain
	}
	return &allocationv1.AllocateResponse{
		Name:          pod.Name,
		Namespace:     pod.Namespace,
		Set:           set,
		Address:       addr,
		Ip:            pod.Status.PodIP,
		Ports:         a.ports(ctx, pod),
		NodeName:      pod.Spec.NodeName,
		GameVersion:   pod.Labels[gamev1.LabelGameVersion],
		SelectorIndex: int32(selector),
		AllocatedAt:   at.Format(time.RFC3339Nano),
	}
}

// ports are the set's spec.ports when it lists them, else the container
// ports of the pod (what the headless Service publishes).
func (a *Allocator) ports(ctx context.Context, pod *corev1.Pod) []*allocationv1.Port {
	var out []*allocationv1.Port
	if a.sets != nil {
		var set gamev1.GameServerSet
		key := client.ObjectKey{Namespace: pod.Namespace, Name: pod.Labels[gamev1.LabelSet]}
		if err := a.sets.Get(ctx, key, &set); err == nil && len(set.Spec.Ports) > 0 {
			for _, p := range set.Spec.Ports {
				out = append(out, &allocationv1.Port{Name: p.Name, Port: p.ContainerPort, Protocol: protocol(p.Protocol)})
			}
			return out
		} else if err != nil && !apierrors.IsNotFound(err) {
			a.opts.Log.Debug("allocation: reading the set for its ports", "set", key, "err", err)
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			name := p.Name
			if name == "" {
				name = strings.ToLower(protocol(p.Protocol)) + "-" + strconv.Itoa(int(p.ContainerPort))
			}
			out = append(out, &allocationv1.Port{Name: name, Port: p.ContainerPort, Protocol: protocol(p.Protocol)})
		}
	}
	return out
}

func protocol(p corev1.Protocol) string {
	if p == "" {
		return string(corev1.ProtocolTCP)
	}
	return string(p)
}
