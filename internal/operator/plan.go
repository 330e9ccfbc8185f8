package operator

import (
	"math"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// server is one live (not being deleted) game-server pod as the planner
// sees it.
type server struct {
	pod     *corev1.Pod
	ordinal int
	state   gamev1.GameServerState
	// current: made from the set's present gameVersion and template.
	current bool
	// ready: state Ready and the kubelet says the pod is ready.
	ready bool
}

// available servers count towards the wanted replicas: a match can run on
// them or runs on them.
func (s *server) available() bool { return s.state == gamev1.StateAllocated || s.ready }

// Why a server is removed; the words appear in Events and metrics.
const (
	reasonShutdown    = "Shutdown"
	reasonUnhealthy   = "Unhealthy"
	reasonUpdate      = "Update"
	reasonScaleDown   = "ScaleDown"
	reasonTerminating = "Terminating"
)

type removal struct {
	srv    *server
	reason string
}

// plan is what one reconcile pass does to the pods.
type plan struct {
	remove []removal
	create int
	// waitingAllocated counts old Allocated servers an update waits for.
	waitingAllocated int
}

// bounds are the set's spec resolved to numbers.
type bounds struct {
	replicas    int
	maxSurge    int
	maxUnavail  int
	recreate    bool
	ordered     bool
	distributed bool
}

// resolveBounds turns the spec into bounds: percentages are of replicas,
// maxSurge rounds up and maxUnavailable down (as a Deployment does), and
// when both come to 0 one server may be unavailable so the update can move.
func resolveBounds(spec *gamev1.GameServerSetSpec) bounds {
	b := bounds{
		replicas:    int(replicasOf(spec)),
		recreate:    spec.UpdateStrategy.Type == gamev1.Recreate,
		ordered:     spec.PodManagementPolicy == gamev1.OrderedReady,
		distributed: spec.ScaleDownPolicy == gamev1.Distributed,
	}
	if b.recreate {
		return b
	}
	quarter := intstr.FromString("25%")
	surge, unavail := &quarter, &quarter
	if ru := spec.UpdateStrategy.RollingUpdate; ru != nil {
		if ru.MaxSurge != nil {
			surge = ru.MaxSurge
		}
		if ru.MaxUnavailable != nil {
			unavail = ru.MaxUnavailable
		}
	}
	b.maxSurge = scaled(surge, b.replicas, true)
	b.maxUnavail = scaled(unavail, b.replicas, false)
	if b.maxSurge == 0 && b.maxUnavail == 0 {
		b.maxUnavail = 1
	}
	return b
}

// scaled resolves a number or percentage of total; invalid values (which
// validation refuses) count as 0.
func scaled(v *intstr.IntOrString, total int, roundUp bool) int {
	if v.Type == intstr.Int {
		return max(0, v.IntValue())
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, total, roundUp)
	if err != nil {
		return 0
	}
	return max(0, n)
}

func replicasOf(spec *gamev1.GameServerSetSpec) int32 {
	if spec.Replicas == nil {
		return 1
	}
	return *spec.Replicas
}

// planSet decides which servers go and how many new ones start. It never
// removes an Allocated server: old Allocated servers hold their slot until
// their game ends (Shutdown, or back to Ready as an old Ready server), and
// Allocated servers beyond replicas stay until then too.
//
// usage gives the number of game servers on a node, for the scale-down order.
func planSet(servers []*server, b bounds, usage func(node string) int) plan {
	var p plan
	removed := map[*server]bool{}
	drop := func(s *server, reason string) {
		removed[s] = true
		p.remove = append(p.remove, removal{s, reason})
	}

	// Ended and broken servers go first, whatever else happens.
	for _, s := range servers {
		switch s.state {
		case gamev1.StateShutdown:
			drop(s, reasonShutdown)
		case gamev1.StateUnhealthy:
			drop(s, reasonUnhealthy)
		}
	}

	var current, oldRest []*server
	oldAllocated := 0
	for _, s := range servers {
		switch {
		case removed[s]:
		case s.current:
			current = append(current, s)
		case s.state == gamev1.StateAllocated:
			oldAllocated++
		default:
			oldRest = append(oldRest, s)
		}
	}
	p.waitingAllocated = oldAllocated
	// Old Allocated servers fill their slots until their games end; the
	// rest of replicas is the new servers' share.
	target := max(0, b.replicas-oldAllocated)

	// Scale down the current servers beyond their share: not-Ready first,
	// then Ready by policy; never an Allocated one.
	if excess := len(current) - target; excess > 0 {
		var candidates []*server
		for _, s := range current {
			if s.state != gamev1.StateAllocated {
				candidates = append(candidates, s)
			}
		}
		sortForRemoval(candidates, b.distributed, usage)
		for _, s := range candidates[:min(excess, len(candidates))] {
			drop(s, reasonScaleDown)
		}
	}

	// Old servers that are not Allocated all go: the not-available ones at
	// once, the Ready ones only while enough servers stay available.
	sortForRemoval(oldRest, b.distributed, usage)
	available := 0
	for _, s := range servers {
		if !removed[s] && s.available() {
			available++
		}
	}
	minAvailable := b.replicas - b.maxUnavail
	for _, s := range oldRest {
		switch {
		case b.recreate || !s.available():
			drop(s, reasonUpdate)
		case available-1 >= minAvailable:
			drop(s, reasonUpdate)
			available--
		}
	}

	// Start new servers up to their share, within replicas+maxSurge.
	total, currentLeft, starting := 0, 0, 0
	for _, s := range servers {
		if removed[s] {
			continue
		}
		total++
		if s.current {
			currentLeft++
		}
		if !s.available() {
			starting++
		}
	}
	p.create = max(0, min(target-currentLeft, b.replicas+b.maxSurge-total))
	if b.ordered && p.create > 0 {
		// One at a time, each after the previous one is Ready.
		if starting > 0 {
			p.create = 0
		} else {
			p.create = 1
		}
	}
	return p
}

// sortForRemoval orders servers so the first is the best to remove: not
// available before available (newest first among them), then Ready servers
// on the least used nodes (Packed) or the most used nodes (Distributed),
// highest ordinal first on a tie.
func sortForRemoval(ss []*server, distributed bool, usage func(string) int) {
	sort.SliceStable(ss, func(i, j int) bool {
		a, b := ss[i], ss[j]
		if a.available() != b.available() {
			return !a.available()
		}
		if !a.available() {
			if ta, tb := a.pod.CreationTimestamp, b.pod.CreationTimestamp; !ta.Equal(&tb) {
				return tb.Before(&ta)
			}
			return a.ordinal > b.ordinal
		}
		ua, ub := nodeUsage(a, usage), nodeUsage(b, usage)
		if ua != ub {
			if distributed {
				return ua > ub
			}
			return ua < ub
		}
		return a.ordinal > b.ordinal
	})
}

func nodeUsage(s *server, usage func(string) int) int {
	if s.pod.Spec.NodeName == "" || usage == nil {
		// Not on a node: nothing to pack.
		return math.MinInt
	}
	return usage(s.pod.Spec.NodeName)
}
