package operator

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// Environment variables the operator gives every game-server container, so
// the SDK knows which pod it is without asking.
const (
	EnvServerName  = "RALLY_GAMESERVER_NAME"
	EnvNamespace   = "RALLY_GAMESERVER_NAMESPACE"
	EnvGameVersion = "RALLY_GAME_VERSION"
	// EnvHealthPeriod tells the SDK how often to ping (a Go duration),
	// from spec.health.periodSeconds.
	EnvHealthPeriod = "RALLY_GAMESERVER_HEALTH_PERIOD"
)

// templateHash is a short digest of the pod template: a pod whose
// LabelTemplateHash differs was made from another template.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec read from the API server always marshals.
		panic(fmt.Sprintf("operator: marshal pod template: %v", err))
	}
	h := fnv.New64a()
	h.Write(b)
	return strconv.FormatUint(h.Sum64(), 36)
}

// podName is the identity of ordinal i of set.
func podName(set string, i int) string { return set + "-" + strconv.Itoa(i) }

// ordinalOf parses the ordinal out of a pod name, or -1 when the name is
// not <set>-<n>.
func ordinalOf(set, name string) int {
	rest, ok := strings.CutPrefix(name, set+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// freeOrdinals returns the n lowest ordinals not in used.
func freeOrdinals(used map[int]bool, n int) []int {
	out := make([]int, 0, n)
	for i := 0; len(out) < n; i++ {
		if !used[i] {
			out = append(out, i)
		}
	}
	return out
}

// newPod builds ordinal i of set from its template.
func newPod(set *gamev1.GameServerSet, i int, hash string) *corev1.Pod {
	name := podName(set.Name, i)
	t := set.Spec.Template.DeepCopy()
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[gamev1.LabelSet] = set.Name
	labels[gamev1.LabelState] = string(gamev1.StateStarting)
	labels[gamev1.LabelGameVersion] = set.Spec.GameVersion
	labels[gamev1.LabelTemplateHash] = hash

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   set.Namespace,
			Labels:      labels,
			Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(set, gamev1.GroupVersion.WithKind("GameServerSet")),
			},
		},
		Spec: t.Spec,
	}
	pod.Spec.Hostname = name
	pod.Spec.Subdomain = set.Name
	env := []corev1.EnvVar{
		{Name: EnvServerName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: EnvNamespace, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: EnvGameVersion, Value: set.Spec.GameVersion},
		{Name: EnvHealthPeriod, Value: fmt.Sprintf("%ds", max(1, set.Spec.Health.PeriodSeconds))},
	}
	for c := range pod.Spec.Containers {
		pod.Spec.Containers[c].Env = addEnv(pod.Spec.Containers[c].Env, env)
	}
	return pod
}

// addEnv appends the variables the container does not set itself.
func addEnv(have, add []corev1.EnvVar) []corev1.EnvVar {
	set := map[string]bool{}
	for _, e := range have {
		set[e.Name] = true
	}
	for _, e := range add {
		if !set[e.Name] {
			have = append(have, e)
		}
	}
	return have
}

// serverPorts are the ports the headless Service publishes: spec.ports, or
// every containerPort of the template when spec.ports is empty.
func serverPorts(set *gamev1.GameServerSet) []gamev1.GameServerPort {
	if len(set.Spec.Ports) > 0 {
		return set.Spec.Ports
	}
	var out []gamev1.GameServerPort
	seen := map[string]bool{}
	for _, c := range set.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			key := fmt.Sprintf("%d/%s", p.ContainerPort, proto)
			if seen[key] {
				continue
			}
			seen[key] = true
			name := p.Name
			if name == "" || seen["name:"+name] {
				name = fmt.Sprintf("%s-%d", strings.ToLower(string(proto)), p.ContainerPort)
			}
			seen["name:"+name] = true
			out = append(out, gamev1.GameServerPort{Name: name, ContainerPort: p.ContainerPort, Protocol: proto})
		}
	}
	return out
}

// podReady reports the kubelet's verdict: the pod runs and its containers
// pass their readiness probes.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// stateOf is the pod's game-server state; a missing or unknown label
// counts as Starting.
func stateOf(p *corev1.Pod) gamev1.GameServerState {
	switch s := gamev1.GameServerState(p.Labels[gamev1.LabelState]); s {
	case gamev1.StateReady, gamev1.StateAllocated, gamev1.StateShutdown, gamev1.StateUnhealthy:
		return s
	default:
		return gamev1.StateStarting
	}
}

// pingPeriod is the ping interval the pod's SDK was given, or 0 when the
// pod does not say. A pod made before spec.health.periodSeconds changed
// keeps pinging at its old pace, and is judged by it.
func pingPeriod(p *corev1.Pod) time.Duration {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == EnvHealthPeriod {
				if d, err := time.ParseDuration(e.Value); err == nil && d > 0 {
					return d
				}
			}
		}
	}
	return 0
}
