package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// ensureService server-side applies the set's headless Service, which
// gives every pod the stable DNS name <pod>.<set>.<namespace>.svc. It
// returns an issue (and changes nothing) when a Service of that name
// belongs to someone else.
func (r *Reconciler) ensureService(ctx context.Context, set *gamev1.GameServerSet) (issue string, err error) {
	ports := servicePorts(set)
	var have corev1.Service
	err = r.client.Get(ctx, types.NamespacedName{Namespace: set.Namespace, Name: set.Name}, &have)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&have, set) {
			return fmt.Sprintf("Service %s exists and is not this set's: pods get no stable DNS names", set.Name), nil
		}
		if serviceUpToDate(&have, set, ports) {
			return "", nil
		}
	case apierrors.IsNotFound(err):
		// The cache only holds Services with the set label: a foreign
		// Service of that name shows up as a conflict when applied below.
	default:
		return "", err
	}

	spec := corev1ac.ServiceSpec().
		WithClusterIP(corev1.ClusterIPNone).
		WithSelector(map[string]string{gamev1.LabelSet: set.Name}).
		// Starting servers get a DNS name too: the name is their identity,
		// not a sign they take players (allocation decides that).
		WithPublishNotReadyAddresses(true)
	for _, p := range ports {
		spec.WithPorts(corev1ac.ServicePort().
			WithName(p.Name).WithPort(p.Port).WithTargetPort(p.TargetPort).WithProtocol(p.Protocol))
	}
	svc := corev1ac.Service(set.Name, set.Namespace).
		WithLabels(map[string]string{gamev1.LabelSet: set.Name}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(gamev1.GroupVersion.String()).WithKind("GameServerSet").
			WithName(set.Name).WithUID(set.UID).
			WithController(true).WithBlockOwnerDeletion(true)).
		WithSpec(spec)

	if apierrors.IsNotFound(err) {
		// Make sure no foreign Service hides behind the cache's filter.
		var raw corev1.Service
		if gerr := r.reader.Get(ctx, types.NamespacedName{Namespace: set.Namespace, Name: set.Name}, &raw); gerr == nil && !metav1.IsControlledBy(&raw, set) {
			return fmt.Sprintf("Service %s exists and is not this set's: pods get no stable DNS names", set.Name), nil
		}
	}
	if err := r.client.Apply(ctx, svc, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return "", fmt.Errorf("apply Service %s: %w", set.Name, err)
	}
	return "", nil
}

func servicePorts(set *gamev1.GameServerSet) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, p := range serverPorts(set) {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		out = append(out, corev1.ServicePort{Name: p.Name, Port: p.ContainerPort, TargetPort: intstr.FromInt32(p.ContainerPort), Protocol: proto})
	}
	return out
}

func serviceUpToDate(svc *corev1.Service, set *gamev1.GameServerSet, ports []corev1.ServicePort) bool {
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses ||
		!reflect.DeepEqual(svc.Spec.Selector, map[string]string{gamev1.LabelSet: set.Name}) ||
		len(svc.Spec.Ports) != len(ports) {
		return false
	}
	for i, p := range ports {
		h := svc.Spec.Ports[i]
		if h.Name != p.Name || h.Port != p.Port || h.TargetPort != p.TargetPort || h.Protocol != p.Protocol {
			return false
		}
	}
	return true
}

// deleteService removes the set's Service when the set goes; garbage
// collection would too, but the finalizer is lifted only once it is gone
// from the operator's hands.
func (r *Reconciler) deleteService(ctx context.Context, set *gamev1.GameServerSet) error {
	var svc corev1.Service
	err := r.client.Get(ctx, types.NamespacedName{Namespace: set.Namespace, Name: set.Name}, &svc)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(&svc, set) {
		return nil
	}
	uid := svc.UID
	if err := r.client.Delete(ctx, &svc, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Service %s: %w", set.Name, err)
	}
	return nil
}

// equalJSON compares two objects by their JSON form.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
