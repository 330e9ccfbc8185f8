package operator

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// Container waiting reasons that mean the server cannot run until someone
// fixes the template (or the image).
var stuckReasons = map[string]bool{
	"CrashLoopBackOff":           true,
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
}

// writeStatus records what the pass saw and did: counts, phase and
// conditions. Nothing is written when nothing changed.
func (p *pass) writeStatus(ctx context.Context) error {
	set := p.set
	orig := set.DeepCopy()
	want := replicasOf(&set.Spec)

	var replicas, ready, allocated, updated, old int32
	byState := map[gamev1.GameServerState]int{}
	for _, s := range p.servers {
		if p.removed[s] {
			continue
		}
		replicas++
		byState[s.state]++
		if s.ready {
			ready++
		}
		if s.state == gamev1.StateAllocated {
			allocated++
		}
		if s.current {
			updated++
		} else {
			old++
		}
	}
	replicas += int32(p.created)
	updated += int32(p.created)
	byState[gamev1.StateStarting] += p.created
	available := ready + allocated

	st := &set.Status
	st.Replicas, st.ReadyReplicas, st.AllocatedReplicas, st.UpdatedReplicas = replicas, ready, allocated, updated
	st.UpdateRevision = p.hash
	st.ObservedGeneration = set.Generation
	st.Selector = labels.SelectorFromSet(labels.Set{gamev1.LabelSet: set.Name}).String()

	gen := set.Generation
	cond := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}

	failReason, failMsg := p.failure(orig)
	if failReason != "" {
		cond(gamev1.ConditionFailed, true, failReason, failMsg)
	} else {
		cond(gamev1.ConditionFailed, false, "NoFailure", "servers are created and run")
	}

	if available >= want {
		cond(gamev1.ConditionReady, true, "ReplicasAvailable", fmt.Sprintf("%d of %d servers Ready or Allocated", available, want))
	} else {
		cond(gamev1.ConditionReady, false, "ReplicasUnavailable", fmt.Sprintf("%d of %d servers Ready or Allocated", available, want))
	}

	switch {
	case set.DeletionTimestamp != nil:
		cond(gamev1.ConditionProgressing, true, "Terminating", fmt.Sprintf("waiting for %d Allocated servers to end their games", p.waitAllocated))
	case old > 0:
		msg := fmt.Sprintf("%d of %d servers updated", updated, want)
		if p.waitAllocated > 0 {
			msg += fmt.Sprintf("; %d Allocated servers of the old version are replaced when their games end", p.waitAllocated)
		}
		cond(gamev1.ConditionProgressing, true, "Updating", msg)
	case allocated > want && replicas > want:
		cond(gamev1.ConditionProgressing, true, "WaitingForAllocated", fmt.Sprintf("%d Allocated servers exceed the %d wanted: they go when their games end", allocated, want))
	case replicas != want || available < want:
		cond(gamev1.ConditionProgressing, true, "Scaling", fmt.Sprintf("%d servers, %d Ready or Allocated, %d wanted", replicas, available, want))
	default:
		cond(gamev1.ConditionProgressing, false, "Complete", fmt.Sprintf("%d servers of the current version", want))
	}

	switch {
	case set.DeletionTimestamp != nil:
		st.Phase = gamev1.PhaseTerminating
	case failReason != "" && available < want:
		st.Phase = gamev1.PhaseFailed
	case want > 0 && len(p.all) == 0 && p.created == 0:
		st.Phase = gamev1.PhasePending
	case available >= want:
		st.Phase = gamev1.PhaseRunning
	default:
		st.Phase = gamev1.PhaseStarting
	}

	for _, state := range []gamev1.GameServerState{gamev1.StateStarting, gamev1.StateReady, gamev1.StateAllocated, gamev1.StateShutdown, gamev1.StateUnhealthy} {
		p.r.m.servers.WithLabelValues(set.Namespace, set.Name, string(state)).Set(float64(byState[state]))
	}

	if equality.Semantic.DeepEqual(orig.Status, set.Status) {
		return nil
	}
	if err := p.r.client.Status().Patch(ctx, set, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// failure says why servers cannot be created or run, if they cannot.
func (p *pass) failure(orig *gamev1.GameServerSet) (reason, msg string) {
	if p.createErr != nil {
		return "PodCreateFailed", truncate(p.createErr.Error())
	}
	if p.waiting && !p.createTried {
		// Nothing was tried: keep what the last pass found.
		if c := meta.FindStatusCondition(orig.Status.Conditions, gamev1.ConditionFailed); c != nil && c.Status == metav1.ConditionTrue && c.Reason == "PodCreateFailed" {
			return c.Reason, c.Message
		}
	}
	stuck, first := 0, ""
	for _, s := range p.servers {
		if p.removed[s] {
			continue
		}
		if why := stuckContainer(s.pod); why != "" {
			stuck++
			if first == "" {
				first = why
			}
		}
	}
	if stuck > 0 {
		return "ContainersFailing", truncate(fmt.Sprintf("%d of %d servers cannot run; %s", stuck, len(p.servers), first))
	}
	if p.serviceIssue != "" {
		return p.serviceReason, p.serviceIssue
	}
	return "", ""
}

// stuckContainer describes the first container of pod that waits for a
// reason it will not get over by itself.
func stuckContainer(pod *corev1.Pod) string {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, c := range list {
			if w := c.State.Waiting; w != nil && stuckReasons[w.Reason] {
				msg := fmt.Sprintf("pod %s container %s: %s (restarts %d)", pod.Name, c.Name, w.Reason, c.RestartCount)
				if w.Message != "" {
					msg += ": " + w.Message
				}
				return msg
			}
		}
	}
	return ""
}

func truncate(s string) string {
	const maxLen = 1024
	if len(s) <= maxLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxLen], "") + "..."
}
