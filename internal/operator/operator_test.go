package operator_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/operator"
)

const wait = 20 * time.Second

func surge1(s *gamev1.GameServerSet) {
	s.Spec.UpdateStrategy = gamev1.UpdateStrategy{Type: gamev1.RollingUpdate, RollingUpdate: &gamev1.RollingUpdateSpec{
		MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(0)),
	}}
}

func cond(set *gamev1.GameServerSet, t string) metav1.Condition {
	if c := meta.FindStatusCondition(set.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// The acceptance path: 5 servers start, report Ready, 3 are allocated; a new
// gameVersion replaces the 2 Ready ones first (never fewer than 5 available,
// as maxUnavailable 0 asks) and leaves the 3 Allocated alone until their
// games end, then replaces them too.
func TestFleetStartsAllocatesAndUpdatesLosslessly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.startOperator(operator.Options{Registerer: reg})
	e.newSet("arena", 5, surge1)

	e.eventually("5 Starting servers", wait, func() (bool, string) {
		pods, set := e.pods("arena"), e.getSet("arena")
		return len(podsIn(pods, gamev1.StateStarting)) == 5 && set.Status.Phase == gamev1.PhaseStarting && set.Status.Replicas == 5,
			fmt.Sprintf("%s phase=%s replicas=%d", names(pods), set.Status.Phase, set.Status.Replicas)
	})
	set := e.getSet("arena")
	pods := e.pods("arena")
	for i, p := range pods {
		want := fmt.Sprintf("arena-%d", i)
		if p.Name != want || p.Spec.Hostname != want || p.Spec.Subdomain != "arena" {
			t.Errorf("pod %d: name %s hostname %s subdomain %s, want %s/%s/arena", i, p.Name, p.Spec.Hostname, p.Spec.Subdomain, want, want)
		}
		if !metav1.IsControlledBy(&p, set) {
			t.Errorf("%s is not controlled by the set: %v", p.Name, p.OwnerReferences)
		}
		if p.Labels["app"] != "match" || p.Labels[gamev1.LabelGameVersion] != "v1" || p.Labels[gamev1.LabelTemplateHash] != set.Status.UpdateRevision {
			t.Errorf("%s labels %v (update revision %q)", p.Name, p.Labels, set.Status.UpdateRevision)
		}
		env := map[string]bool{}
		for _, v := range p.Spec.Containers[0].Env {
			env[v.Name] = true
		}
		if !env[operator.EnvServerName] || !env[operator.EnvNamespace] || !env[operator.EnvGameVersion] || !env[operator.EnvHealthPeriod] {
			t.Errorf("%s env %v lacks the SDK variables", p.Name, p.Spec.Containers[0].Env)
		}
	}
	var svc corev1.Service
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: "arena"}, &svc); err != nil {
		t.Fatalf("headless Service: %v", err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.Selector[gamev1.LabelSet] != "arena" || !svc.Spec.PublishNotReadyAddresses ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 7777 || svc.Spec.Ports[0].Protocol != corev1.ProtocolUDP {
		t.Errorf("Service spec %+v", svc.Spec)
	}

	for _, p := range pods {
		e.mustSetState(p.Name, gamev1.StateStarting, gamev1.StateReady)
	}
	e.eventually("Running with 5 Ready", wait, func() (bool, string) {
		set := e.getSet("arena")
		return set.Status.Phase == gamev1.PhaseRunning && set.Status.ReadyReplicas == 5 && cond(set, gamev1.ConditionReady).Status == metav1.ConditionTrue,
			fmt.Sprintf("%+v", set.Status)
	})

	allocated := []string{"arena-0", "arena-2", "arena-4"}
	uids := map[string]types.UID{}
	for _, n := range allocated {
		e.mustSetState(n, gamev1.StateReady, gamev1.StateAllocated)
	}
	for _, p := range e.pods("arena") {
		uids[p.Name] = p.UID
	}
	e.eventually("3 Allocated, 2 Ready", wait, func() (bool, string) {
		set := e.getSet("arena")
		return set.Status.AllocatedReplicas == 3 && set.Status.ReadyReplicas == 2, fmt.Sprintf("%+v", set.Status)
	})

	e.kubelet.autoReady("arena")
	e.rec.openWindow("arena")
	e.updateSet("arena", func(s *gamev1.GameServerSet) { s.Spec.GameVersion = "v2" })
	e.eventually("the 2 Ready servers replaced, the 3 Allocated kept", wait, func() (bool, string) {
		pods := e.pods("arena")
		newReady, keptAllocated := 0, 0
		for _, p := range pods {
			if p.Labels[gamev1.LabelGameVersion] == "v2" && p.Labels[gamev1.LabelState] == string(gamev1.StateReady) {
				newReady++
			}
			if p.Labels[gamev1.LabelGameVersion] == "v1" && p.Labels[gamev1.LabelState] == string(gamev1.StateAllocated) && uids[p.Name] == p.UID {
				keptAllocated++
			}
		}
		set := e.getSet("arena")
		return len(pods) == 5 && newReady == 2 && keptAllocated == 3 && set.Status.UpdatedReplicas == 2 && e.rec.available("arena") == 5,
			fmt.Sprintf("%s updated=%d", names(pods), set.Status.UpdatedReplicas)
	})
	if low := e.rec.closeWindow(); low < 5 {
		t.Fatalf("only %d servers were available at one point of the update; maxUnavailable 0 allows none fewer than 5", low)
	}
	for _, n := range []string{"arena-1", "arena-3"} {
		if !e.rec.wasDeleted(n) {
			t.Errorf("old Ready server %s was not replaced", n)
		}
	}
	set = e.getSet("arena")
	if c := cond(set, gamev1.ConditionProgressing); c.Reason != "Updating" || !strings.Contains(c.Message, "3 Allocated") {
		t.Errorf("Progressing = %+v, want Updating and a word on the 3 Allocated servers", c)
	}

	// The games end: each Allocated server shuts down and is replaced.
	for _, n := range allocated {
		e.mustSetState(n, gamev1.StateAllocated, gamev1.StateShutdown)
	}
	e.eventually("every server on v2 and Ready", wait, func() (bool, string) {
		pods, set := e.pods("arena"), e.getSet("arena")
		for _, p := range pods {
			if p.Labels[gamev1.LabelGameVersion] != "v2" || p.Labels[gamev1.LabelState] != string(gamev1.StateReady) || uids[p.Name] == p.UID {
				return false, names(pods)
			}
		}
		c := cond(set, gamev1.ConditionProgressing)
		return len(pods) == 5 && set.Status.UpdatedReplicas == 5 && set.Status.ReadyReplicas == 5 && set.Status.Phase == gamev1.PhaseRunning &&
				c.Status == metav1.ConditionFalse && c.Reason == "Complete" && set.Status.ObservedGeneration == set.Generation,
			fmt.Sprintf("%s status=%+v", names(pods), set.Status)
	})
	if got := counter(t, reg, "rally_operator_pods_created_total"); got != 10 {
		t.Errorf("rally_operator_pods_created_total = %v, want 10 (5 at start, 5 replacements)", got)
	}
	if got := counter(t, reg, "rally_operator_pods_deleted_total"); got != 5 {
		t.Errorf("rally_operator_pods_deleted_total = %v, want 5", got)
	}
}

// counter sums a counter family's samples.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func (e *env) scale(name string, n int32) {
	e.t.Helper()
	set := &gamev1.GameServerSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns}}
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)))
	if err := e.c.SubResource("scale").Patch(context.Background(), set, patch); err != nil {
		e.t.Fatalf("scale %s to %d: %v", name, n, err)
	}
}

func podNames(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, p.Name)
	}
	return strings.Join(s, ",")
}

// Scale-down (through the scale subresource, as an autoscaler does) takes
// servers that are not Ready first, then Ready ones, and never an Allocated
// one, even when that leaves more servers than asked.
func TestScaleDownNeverRemovesAllocated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startOperator(operator.Options{})
	e.newSet("pool", 6)
	e.eventually("6 servers", wait, func() (bool, string) {
		pods := e.pods("pool")
		return len(pods) == 6, names(pods)
	})
	for i := 0; i < 5; i++ {
		e.mustSetState(fmt.Sprintf("pool-%d", i), gamev1.StateStarting, gamev1.StateReady)
	}
	for i := 0; i < 3; i++ {
		e.mustSetState(fmt.Sprintf("pool-%d", i), gamev1.StateReady, gamev1.StateAllocated)
	}
	e.eventually("3 Allocated, 2 Ready, 1 Starting", wait, func() (bool, string) {
		s := e.getSet("pool").Status
		return s.AllocatedReplicas == 3 && s.ReadyReplicas == 2 && s.Replicas == 6, fmt.Sprintf("%+v", s)
	})

	e.scale("pool", 4)
	e.eventually("the Starting server and one Ready server gone", wait, func() (bool, string) {
		pods := e.pods("pool")
		return podNames(pods) == "pool-0,pool-1,pool-2,pool-3", names(pods)
	})

	e.scale("pool", 1)
	e.eventually("only the 3 Allocated servers left", wait, func() (bool, string) {
		pods, set := e.pods("pool"), e.getSet("pool")
		return podNames(pods) == "pool-0,pool-1,pool-2" && len(podsIn(pods, gamev1.StateAllocated)) == 3 &&
				set.Status.Replicas == 3 && cond(set, gamev1.ConditionProgressing).Reason == "WaitingForAllocated",
			fmt.Sprintf("%s %+v", names(pods), set.Status)
	})
	var sc autoscalingv1.Scale
	if err := e.c.SubResource("scale").Get(context.Background(), e.getSet("pool"), &sc); err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 1 || sc.Status.Replicas != 3 || sc.Status.Selector != gamev1.LabelSet+"=pool" {
		t.Errorf("scale subresource = %+v", sc)
	}

	// A game ends and its server goes back to the pool: now it can go.
	e.mustSetState("pool-1", gamev1.StateAllocated, gamev1.StateReady)
	e.eventually("the server back from its game removed", wait, func() (bool, string) {
		pods := e.pods("pool")
		return podNames(pods) == "pool-0,pool-2", names(pods)
	})
}

// Allocations racing a scale to zero: whatever the order, a server that got
// allocated is not deleted (the deletion carries the resourceVersion the
// operator read, so the API server refuses it once the pod changed). A
// small parallelism limit spreads the deletions over several passes, so
// allocations land between them.
func TestScaleDownRacingAllocationsKeepsEveryAllocated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.autoReady("race")
	reg := prometheus.NewRegistry()
	e.startOperator(operator.Options{MaxParallel: 4, Registerer: reg})
	e.newSet("race", 20)
	e.eventually("20 Ready", wait, func() (bool, string) {
		s := e.getSet("race").Status
		return s.ReadyReplicas == 20, fmt.Sprintf("%+v", s)
	})
	start := make(chan struct{})
	won := make(chan string, 20)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("race-%d", i)
			<-start
			// Late allocators go later, so some meet a pass half done.
			time.Sleep(time.Duration(i) * 5 * time.Millisecond)
			if e.setState(name, gamev1.StateReady, gamev1.StateAllocated) == nil {
				won <- name
			}
		}()
	}
	e.scale("race", 0)
	close(start)
	wg.Wait()
	close(won)
	var got []string
	for n := range won {
		got = append(got, n)
	}
	e.eventually("only the allocated servers left", wait, func() (bool, string) {
		pods := e.pods("race")
		return len(pods) == len(got) && len(podsIn(pods, gamev1.StateAllocated)) == len(got), fmt.Sprintf("allocated %v; pods %s", got, names(pods))
	})
	t.Logf("%d of 20 allocations won the race against the scale-down; %v deletions refused because the pod had changed",
		len(got), counter(t, reg, "rally_operator_pod_delete_conflicts_total"))
}

// A server whose health pings stop is marked Unhealthy and replaced; one
// that never becomes Ready within the start-up timeout too.
func TestUnhealthyServersAreReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.autoReady("hp")
	e.startOperator(operator.Options{})
	e.newSet("hp", 2, func(s *gamev1.GameServerSet) { s.Spec.Health.FailureThreshold = 1 })
	e.newSet("slow", 1, func(s *gamev1.GameServerSet) { s.Spec.Health.StartupTimeoutSeconds = 1 })
	e.eventually("2 Ready", wait, func() (bool, string) {
		s := e.getSet("hp").Status
		return s.ReadyReplicas == 2, fmt.Sprintf("%+v", s)
	})
	pods := e.pods("hp")
	sick, well := pods[0], pods[1]
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			e.ping(well.Name)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-pinged }()
	if err := e.ping(sick.Name); err != nil {
		t.Fatal(err)
	}
	e.eventually("the silent server replaced", wait, func() (bool, string) {
		pods := e.pods("hp")
		for _, p := range pods {
			if p.UID == sick.UID {
				return false, names(pods)
			}
		}
		return len(podsIn(pods, gamev1.StateReady)) == 2, names(pods)
	})
	for _, p := range e.pods("hp") {
		if p.Name == well.Name && p.UID != well.UID {
			t.Errorf("the server that kept pinging was replaced too")
		}
	}
	var slow []corev1.Pod
	e.eventually("the slow set's server", wait, func() (bool, string) {
		slow = e.pods("slow")
		return len(slow) == 1, names(slow)
	})
	e.eventually("the server that never started replaced", wait, func() (bool, string) {
		pods := e.pods("slow")
		return len(pods) == 1 && pods[0].UID != slow[0].UID, names(pods)
	})
	e.eventually("Unhealthy events", wait, func() (bool, string) {
		notes := e.events("Unhealthy")
		all := strings.Join(notes, " | ")
		return strings.Contains(all, "missed-pings") && strings.Contains(all, "startup-timeout"), all
	})
}

// events returns the notes of the namespace's Events with this reason.
func (e *env) events(reason string) []string {
	var list eventsv1.EventList
	if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.Reason == reason {
			out = append(out, ev.Note)
		}
	}
	return out
}

// The operator stops in the middle of a rolling update and a new one
// finishes it: what it needs is on the pods, not in the old one's memory.
func TestOperatorRestartMidUpdateFinishesIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.autoReady("fleet")
	stop := e.startOperator(operator.Options{})
	e.newSet("fleet", 4, surge1)
	e.eventually("4 Ready", wait, func() (bool, string) {
		s := e.getSet("fleet").Status
		return s.ReadyReplicas == 4 && s.Phase == gamev1.PhaseRunning, fmt.Sprintf("%+v", s)
	})
	e.mustSetState("fleet-0", gamev1.StateReady, gamev1.StateAllocated)
	allocUID := e.pods("fleet")[0].UID

	e.rec.openWindow("fleet")
	e.updateSet("fleet", func(s *gamev1.GameServerSet) { s.Spec.GameVersion = "v2" })
	e.eventually("the update under way", wait, func() (bool, string) {
		pods := e.pods("fleet")
		v2 := 0
		for _, p := range pods {
			if p.Labels[gamev1.LabelGameVersion] == "v2" {
				v2++
			}
		}
		return v2 >= 1, names(pods)
	})
	stop()
	oldReady := 0
	for _, p := range e.pods("fleet") {
		if p.Labels[gamev1.LabelGameVersion] == "v1" && p.Labels[gamev1.LabelState] == string(gamev1.StateReady) {
			oldReady++
		}
	}
	if oldReady == 0 {
		t.Fatalf("the update finished before the operator stopped: %s", names(e.pods("fleet")))
	}
	t.Logf("operator stopped with %d old Ready servers left: %s", oldReady, names(e.pods("fleet")))

	e.startOperator(operator.Options{})
	e.eventually("the Ready servers replaced by the new operator", wait, func() (bool, string) {
		pods := e.pods("fleet")
		v2 := 0
		for _, p := range pods {
			if p.Labels[gamev1.LabelGameVersion] == "v2" && p.Labels[gamev1.LabelState] == string(gamev1.StateReady) {
				v2++
			}
		}
		return len(pods) == 4 && v2 == 3 && pods[0].UID == allocUID && pods[0].Labels[gamev1.LabelState] == string(gamev1.StateAllocated), names(pods)
	})
	if low := e.rec.closeWindow(); low < 4 {
		t.Fatalf("only %d servers were available at one point across the restart; want 4", low)
	}
	e.mustSetState("fleet-0", gamev1.StateAllocated, gamev1.StateShutdown)
	e.eventually("every server on v2", wait, func() (bool, string) {
		pods, set := e.pods("fleet"), e.getSet("fleet")
		return len(pods) == 4 && set.Status.UpdatedReplicas == 4 && set.Status.ReadyReplicas == 4 &&
			cond(set, gamev1.ConditionProgressing).Reason == "Complete", names(pods)
	})
}

// Deleting a set removes its idle servers at once and waits, Terminating,
// for the Allocated one to end its game; then the set and its Service go.
func TestDeletionWaitsForAllocatedServers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.autoReady("term")
	e.startOperator(operator.Options{})
	e.newSet("term", 3)
	e.eventually("3 Ready", wait, func() (bool, string) {
		s := e.getSet("term").Status
		return s.ReadyReplicas == 3, fmt.Sprintf("%+v", s)
	})
	e.mustSetState("term-1", gamev1.StateReady, gamev1.StateAllocated)
	e.eventually("allocation seen", wait, func() (bool, string) {
		s := e.getSet("term").Status
		return s.AllocatedReplicas == 1, fmt.Sprintf("%+v", s)
	})
	if err := e.c.Delete(context.Background(), e.getSet("term")); err != nil {
		t.Fatal(err)
	}
	e.eventually("Terminating with the Allocated server kept", wait, func() (bool, string) {
		pods, set := e.pods("term"), e.getSet("term")
		return podNames(pods) == "term-1" && set.Status.Phase == gamev1.PhaseTerminating &&
			cond(set, gamev1.ConditionProgressing).Reason == "Terminating", fmt.Sprintf("%s %+v", names(pods), set.Status)
	})
	e.mustSetState("term-1", gamev1.StateAllocated, gamev1.StateShutdown)
	e.eventually("the set and its Service gone", wait, func() (bool, string) {
		var set gamev1.GameServerSet
		setErr := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: "term"}, &set)
		var svc corev1.Service
		svcErr := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: "term"}, &svc)
		return apierrors.IsNotFound(setErr) && apierrors.IsNotFound(svcErr) && len(e.pods("term")) == 0,
			fmt.Sprintf("set: %v, service: %v", setErr, svcErr)
	})
}

// Pods the API server refuses, and containers that crash-loop, put the set
// in phase Failed with a condition saying why.
func TestFailedPhaseSaysWhy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.stuck.Store("CrashLoopBackOff")
	e.startOperator(operator.Options{})
	// A container without an image passes the CRD schema but no pod can
	// be made from it.
	e.newSet("noimage", 2, func(s *gamev1.GameServerSet) { s.Spec.Template.Spec.Containers[0].Image = "" })
	e.newSet("crashy", 2)
	e.eventually("noimage Failed: PodCreateFailed", wait, func() (bool, string) {
		set := e.getSet("noimage")
		c := cond(set, gamev1.ConditionFailed)
		return set.Status.Phase == gamev1.PhaseFailed && c.Status == metav1.ConditionTrue && c.Reason == "PodCreateFailed" &&
			strings.Contains(c.Message, "image"), fmt.Sprintf("%+v", set.Status)
	})
	e.eventually("crashy Failed: ContainersFailing", wait, func() (bool, string) {
		set := e.getSet("crashy")
		c := cond(set, gamev1.ConditionFailed)
		return set.Status.Phase == gamev1.PhaseFailed && c.Reason == "ContainersFailing" && strings.Contains(c.Message, "CrashLoopBackOff"),
			fmt.Sprintf("%+v", set.Status)
	})
	if len(e.events("FailedCreate")) == 0 {
		t.Error("no FailedCreate event")
	}
}

// OrderedReady starts one server at a time, each after the previous one is
// Ready, as a StatefulSet does.
func TestOrderedReadyStartsOneAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startOperator(operator.Options{})
	e.newSet("ordered", 3, func(s *gamev1.GameServerSet) { s.Spec.PodManagementPolicy = gamev1.OrderedReady })
	for i := 0; i < 3; i++ {
		want := i + 1
		e.eventually(fmt.Sprintf("%d servers", want), wait, func() (bool, string) {
			pods, set := e.pods("ordered"), e.getSet("ordered")
			// The status counts what the operator saw: once it shows the
			// pods, a pass has run and chose not to start more.
			return len(pods) == want && set.Status.Replicas == int32(want) && set.Status.ReadyReplicas == int32(i), names(pods)
		})
		e.mustSetState(fmt.Sprintf("ordered-%d", i), gamev1.StateStarting, gamev1.StateReady)
	}
	e.eventually("3 Ready", wait, func() (bool, string) {
		s := e.getSet("ordered").Status
		return s.ReadyReplicas == 3 && s.Phase == gamev1.PhaseRunning, fmt.Sprintf("%+v", s)
	})
}

// A Service that already has the set's name and belongs to someone else is
// left alone; the set says so and runs its servers anyway.
func TestForeignServiceIsNotTakenOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kubelet.autoReady("taken")
	e.startOperator(operator.Options{})
	foreign := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: e.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if err := e.c.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	e.newSet("taken", 1)
	e.eventually("ServiceConflict, and the server running", wait, func() (bool, string) {
		set := e.getSet("taken")
		c := cond(set, gamev1.ConditionFailed)
		return c.Reason == "ServiceConflict" && set.Status.ReadyReplicas == 1 && set.Status.Phase == gamev1.PhaseRunning,
			fmt.Sprintf("%+v", set.Status)
	})
	var svc corev1.Service
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: "taken"}, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.OwnerReferences) != 0 || svc.Spec.Selector["app"] != "web" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Errorf("the foreign Service was changed: %+v %+v", svc.ObjectMeta.OwnerReferences, svc.Spec)
	}
}
