package operator

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// srv builds a server: ordinal, state, current version or not, node.
func srv(ord int, state gamev1.GameServerState, current bool, node string) *server {
	return &server{
		pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d", ord), CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+ord), 0))},
			Spec:       corev1.PodSpec{NodeName: node},
		},
		ordinal: ord, state: state, current: current, ready: state == gamev1.StateReady,
	}
}

func removed(p plan) string {
	var s []string
	for _, r := range p.remove {
		s = append(s, fmt.Sprintf("%s:%s", r.srv.pod.Name, r.reason))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

const (
	starting  = gamev1.StateStarting
	ready     = gamev1.StateReady
	allocated = gamev1.StateAllocated
)

func TestResolveBoundsRoundsLikeADeployment(t *testing.T) {
	n := int32(5)
	spec := gamev1.GameServerSetSpec{Replicas: &n}
	b := resolveBounds(&spec)
	if b.maxSurge != 2 || b.maxUnavail != 1 {
		t.Errorf("25%% of 5: surge %d unavailable %d, want 2 (up) and 1 (down)", b.maxSurge, b.maxUnavail)
	}
	zero := intstr.FromString("0%")
	spec.UpdateStrategy.RollingUpdate = &gamev1.RollingUpdateSpec{MaxSurge: &zero, MaxUnavailable: &zero}
	if b := resolveBounds(&spec); b.maxUnavail != 1 {
		t.Errorf("both 0: unavailable %d, want 1 so the update can move", b.maxUnavail)
	}
}

func TestPlanNeverRemovesAllocated(t *testing.T) {
	servers := []*server{
		srv(0, allocated, true, ""), srv(1, allocated, true, ""), srv(2, allocated, true, ""),
		srv(3, ready, true, ""), srv(4, ready, true, ""),
	}
	p := planSet(servers, bounds{replicas: 1, maxSurge: 1, maxUnavail: 0}, nil)
	if got := removed(p); got != "s-3:ScaleDown s-4:ScaleDown" {
		t.Errorf("removed %q", got)
	}
	if p.create != 0 {
		t.Errorf("create %d", p.create)
	}
	p = planSet(servers, bounds{replicas: 0, maxUnavail: 1}, nil)
	if got := removed(p); got != "s-3:ScaleDown s-4:ScaleDown" {
		t.Errorf("scale to 0 removed %q", got)
	}
}

func TestPlanScaleDownOrder(t *testing.T) {
	servers := []*server{
		srv(0, ready, true, "a"), srv(1, ready, true, "a"), srv(2, ready, true, "b"),
		srv(3, starting, true, "b"), srv(4, allocated, true, "c"),
	}
	usage := func(node string) int { return map[string]int{"a": 5, "b": 2, "c": 9}[node] }
	// Not Ready first, then Ready on the least used node (Packed).
	p := planSet(servers, bounds{replicas: 3, maxUnavail: 1}, usage)
	if got := removed(p); got != "s-2:ScaleDown s-3:ScaleDown" {
		t.Errorf("Packed removed %q, want the Starting server and the one on the least used node", got)
	}
	// Distributed thins the most used node.
	p = planSet(servers, bounds{replicas: 3, maxUnavail: 1, distributed: true}, usage)
	if got := removed(p); got != "s-1:ScaleDown s-3:ScaleDown" {
		t.Errorf("Distributed removed %q, want the Starting server and the highest ordinal on the busiest node", got)
	}
}

func TestPlanRollingUpdateWaitsForReady(t *testing.T) {
	old := []*server{srv(0, allocated, false, ""), srv(1, ready, false, ""), srv(2, ready, false, "")}
	b := bounds{replicas: 3, maxSurge: 1, maxUnavail: 0}
	p := planSet(old, b, nil)
	if len(p.remove) != 0 || p.create != 1 || p.waitingAllocated != 1 {
		t.Fatalf("first step: removed %q create %d waiting %d; want a surge of 1 and nothing removed", removed(p), p.create, p.waitingAllocated)
	}
	// The new server is Starting: nothing more happens.
	step := append(old, srv(3, starting, true, ""))
	if p := planSet(step, b, nil); len(p.remove) != 0 || p.create != 0 {
		t.Fatalf("while the new server starts: removed %q create %d", removed(p), p.create)
	}
	// It is Ready: one old Ready server goes.
	step[3] = srv(3, ready, true, "")
	p = planSet(step, b, nil)
	if got := removed(p); got != "s-2:Update" || p.create != 1 {
		t.Fatalf("after Ready: removed %q create %d, want s-2 replaced and the next surge", got, p.create)
	}
	// The Allocated old server ends its game: it goes and is replaced.
	fin := []*server{srv(0, gamev1.StateShutdown, false, ""), srv(3, ready, true, ""), srv(4, ready, true, "")}
	p = planSet(fin, b, nil)
	if got := removed(p); got != "s-0:Shutdown" || p.create != 1 {
		t.Fatalf("after Shutdown: removed %q create %d", got, p.create)
	}
}

func TestPlanRecreateKeepsAllocated(t *testing.T) {
	servers := []*server{srv(0, allocated, false, ""), srv(1, ready, false, ""), srv(2, starting, false, "")}
	p := planSet(servers, bounds{replicas: 3, recreate: true}, nil)
	if got := removed(p); got != "s-1:Update s-2:Update" || p.create != 2 {
		t.Errorf("removed %q create %d", got, p.create)
	}
}

func TestPlanOrderedReadyStartsOne(t *testing.T) {
	b := bounds{replicas: 3, maxUnavail: 1, ordered: true}
	if p := planSet(nil, b, nil); p.create != 1 {
		t.Errorf("empty: create %d, want 1", p.create)
	}
	if p := planSet([]*server{srv(0, starting, true, "")}, b, nil); p.create != 0 {
		t.Errorf("one Starting: create %d, want 0", p.create)
	}
	if p := planSet([]*server{srv(0, ready, true, "")}, b, nil); p.create != 1 {
		t.Errorf("one Ready: create %d, want 1", p.create)
	}
}

func TestOrdinals(t *testing.T) {
	for name, want := range map[string]int{"s-0": 0, "s-12": 12, "s-": -1, "s-01": -1, "s-x": -1, "other-1": -1, "s-1-2": -1} {
		if got := ordinalOf("s", name); got != want {
			t.Errorf("ordinalOf(%q) = %d, want %d", name, got, want)
		}
	}
	if got := freeOrdinals(map[int]bool{0: true, 2: true}, 3); fmt.Sprint(got) != "[1 3 4]" {
		t.Errorf("freeOrdinals = %v", got)
	}
}

func TestVerdict(t *testing.T) {
	h := gamev1.HealthSpec{PeriodSeconds: 2, FailureThreshold: 3, StartupTimeoutSeconds: 60}
	now := time.Unix(10_000, 0)
	s := srv(0, ready, true, "")
	s.pod.Annotations = map[string]string{gamev1.AnnotationHealth: now.Add(-5 * time.Second).Format(time.RFC3339Nano)}
	if cause, _, next := verdict(s, h, now); cause != "" || !next.Equal(now.Add(time.Second)) {
		t.Errorf("5 s silent of 6 allowed: cause %q next %v", cause, next)
	}
	s.pod.Annotations[gamev1.AnnotationHealth] = now.Add(-7 * time.Second).Format(time.RFC3339Nano)
	if cause, _, _ := verdict(s, h, now); cause != "missed-pings" {
		t.Errorf("7 s silent: cause %q", cause)
	}
	if cause, _, _ := verdict(s, gamev1.HealthSpec{Disabled: true}, now); cause != "" {
		t.Errorf("disabled: cause %q", cause)
	}
	delete(s.pod.Annotations, gamev1.AnnotationHealth)
	if cause, _, _ := verdict(s, h, now); cause != "" {
		t.Errorf("never pinged: cause %q, want none", cause)
	}
	// A pod told to ping every 4 s is judged by that, not by today's 2 s.
	s.pod.Annotations[gamev1.AnnotationHealth] = now.Add(-7 * time.Second).Format(time.RFC3339Nano)
	s.pod.Spec.Containers = []corev1.Container{{Name: "game", Env: []corev1.EnvVar{{Name: EnvHealthPeriod, Value: "4s"}}}}
	if cause, _, _ := verdict(s, h, now); cause != "" {
		t.Errorf("7 s silent of 12 allowed by the pod's own period: cause %q", cause)
	}
	st := srv(1, starting, true, "")
	st.pod.CreationTimestamp = metav1.NewTime(now.Add(-61 * time.Second))
	if cause, _, _ := verdict(st, h, now); cause != "startup-timeout" {
		t.Errorf("slow start: cause %q", cause)
	}
}

func TestPingsAloneDoNotWakeTheController(t *testing.T) {
	p := notJustAPing()
	pod := func(ping, state string) *corev1.Pod {
		pd := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "s-0", Labels: map[string]string{gamev1.LabelState: state}, Annotations: map[string]string{}}}
		if ping != "" {
			pd.Annotations[gamev1.AnnotationHealth] = ping
		}
		pd.ResourceVersion = ping + state
		return pd
	}
	cases := []struct {
		name     string
		old, new *corev1.Pod
		want     bool
	}{
		{"first ping", pod("", "Ready"), pod("t1", "Ready"), true},
		{"next ping", pod("t1", "Ready"), pod("t2", "Ready"), false},
		{"ping and allocation", pod("t1", "Ready"), pod("t2", "Allocated"), true},
		{"state change", pod("t1", "Ready"), pod("t1", "Shutdown"), true},
	}
	for _, c := range cases {
		if got := p.Update(event.UpdateEvent{ObjectOld: c.old, ObjectNew: c.new}); got != c.want {
			t.Errorf("%s: wakes = %v, want %v", c.name, got, c.want)
		}
	}
}
