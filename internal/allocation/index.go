package allocation

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// index holds the Ready game servers the pod informer has seen, by
// namespace and by namespace and set, so picking a candidate never lists
// pods from the API server or copies the informer's cache.
//
// Pods in it are the informer's objects: read-only.
type index struct {
	mu sync.Mutex
	// ready maps scope -> pod UID -> pod; scope is "<ns>/" for any set
	// of the namespace and "<ns>/<set>" for one set.
	ready map[string]map[types.UID]*corev1.Pod
	// stale maps a pod to the version this process has used up: it was
	// allocated from that version, or the API server refused that version
	// (someone else got the pod first). The pod is skipped until the
	// informer shows a newer version, so a cache that lags behind the API
	// server does not send the next request into a certain conflict.
	stale map[types.UID]string
	// busy holds pods an allocation of this process is writing right now:
	// concurrent requests of one process never race for the same pod.
	busy map[types.UID]bool
}

func newIndex() *index {
	return &index{
		ready: map[string]map[types.UID]*corev1.Pod{},
		stale: map[types.UID]string{},
		busy:  map[types.UID]bool{},
	}
}

func isReady(p *corev1.Pod) bool {
	return p.Labels[gamev1.LabelState] == string(gamev1.StateReady) &&
		p.Labels[gamev1.LabelSet] != "" && p.DeletionTimestamp == nil
}

func scopes(p *corev1.Pod) [2]string {
	return [2]string{p.Namespace + "/", p.Namespace + "/" + p.Labels[gamev1.LabelSet]}
}

// set records the informer's latest version of a pod.
func (ix *index) set(p *corev1.Pod) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if v, ok := ix.stale[p.UID]; ok && v != p.ResourceVersion {
		delete(ix.stale, p.UID)
	}
	ix.removeLocked(p.UID)
	if !isReady(p) {
		return
	}
	for _, s := range scopes(p) {
		m := ix.ready[s]
		if m == nil {
			m = map[types.UID]*corev1.Pod{}
			ix.ready[s] = m
		}
		m[p.UID] = p
	}
}

// delete forgets a pod.
func (ix *index) delete(p *corev1.Pod) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	delete(ix.stale, p.UID)
	ix.removeLocked(p.UID)
}

// removeLocked drops a pod from every scope. A pod's namespace and set
// never change, but the old version may be gone from the informer, so it
// is found by looking in the scopes it was in.
func (ix *index) removeLocked(uid types.UID) {
	for s, m := range ix.ready {
		if _, ok := m[uid]; ok {
			delete(m, uid)
			if len(m) == 0 {
				delete(ix.ready, s)
			}
		}
	}
}

// claim picks a Ready pod of scope matching sel that this process is not
// already writing and has not used up, and marks it busy. Go's map order
// is random, so allocators of several replicas start at different pods
// and rarely collide. It returns nil when no pod qualifies.
func (ix *index) claim(scope string, sel labels.Selector) *corev1.Pod {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for uid, p := range ix.ready[scope] {
		if ix.busy[uid] || ix.stale[uid] == p.ResourceVersion || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		ix.busy[uid] = true
		return p
	}
	return nil
}

// release ends a claim; usedUp says the claimed version must not be
// tried again (allocated, or refused by the API server).
func (ix *index) release(p *corev1.Pod, usedUp bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	delete(ix.busy, p.UID)
	if !usedUp {
		return
	}
	// Only if the informer still holds the claimed version: a newer one
	// has already replaced it in the index.
	for _, m := range ix.ready {
		if cur, ok := m[p.UID]; ok {
			if cur.ResourceVersion == p.ResourceVersion {
				ix.stale[p.UID] = p.ResourceVersion
			}
			return
		}
	}
}

// readyCount is the number of Ready pods across namespaces.
func (ix *index) readyCount() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := 0
	for s, m := range ix.ready {
		if s[len(s)-1] == '/' {
			n += len(m)
		}
	}
	return n
}

// handler feeds the index from a pod informer.
func (ix *index) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok {
				ix.set(p)
			}
		},
		UpdateFunc: func(_, obj any) {
			if p, ok := obj.(*corev1.Pod); ok {
				ix.set(p)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				ix.delete(p)
			}
		},
	}
}
