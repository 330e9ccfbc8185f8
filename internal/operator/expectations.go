package operator

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// expectations remember the creations and deletions a pass made until the
// informer cache shows them, so the next pass does not act on a stale view
// (delete one more Ready server than maxUnavailable allows, or miss a pod it
// just created). They are only a guard against cache lag: after a restart
// the cache is fresh and nothing is expected.
type expectations struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[types.NamespacedName]*pending
}

type pending struct {
	creates map[string]time.Time    // pod name -> when
	deletes map[types.UID]time.Time // pod uid -> when
}

func newExpectations(ttl time.Duration) *expectations {
	return &expectations{ttl: ttl, m: map[types.NamespacedName]*pending{}}
}

func (e *expectations) get(key types.NamespacedName) *pending {
	p := e.m[key]
	if p == nil {
		p = &pending{creates: map[string]time.Time{}, deletes: map[types.UID]time.Time{}}
		e.m[key] = p
	}
	return p
}

func (e *expectations) expectCreate(key types.NamespacedName, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).creates[name] = time.Now()
}

func (e *expectations) expectDelete(key types.NamespacedName, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(key).deletes[uid] = time.Now()
}

// forgetCreate drops an expectation whose request failed.
func (e *expectations) forgetCreate(key types.NamespacedName, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.get(key).creates, name)
}

func (e *expectations) forgetDelete(key types.NamespacedName, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.get(key).deletes, uid)
}

// satisfied reports whether pods (every pod of the set in the cache, being
// deleted or not) show all that was expected. Expectations older than the
// ttl are dropped: a missed watch event must not stall the set for good.
func (e *expectations) satisfied(key types.NamespacedName, pods []*corev1.Pod) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.m[key]
	if p == nil {
		return true
	}
	byName := map[string]bool{}
	gone := map[types.UID]bool{}
	for uid := range p.deletes {
		gone[uid] = true
	}
	for _, pod := range pods {
		byName[pod.Name] = true
		if pod.DeletionTimestamp == nil {
			gone[pod.UID] = false
		}
	}
	now := time.Now()
	for name, at := range p.creates {
		if byName[name] || now.Sub(at) > e.ttl {
			delete(p.creates, name)
		}
	}
	for uid, at := range p.deletes {
		if gone[uid] || now.Sub(at) > e.ttl {
			delete(p.deletes, uid)
		}
	}
	if len(p.creates) == 0 && len(p.deletes) == 0 {
		delete(e.m, key)
		return true
	}
	return false
}

// pendingNames are pod names created but not yet in the cache, so their
// ordinals are not handed out twice.
func (e *expectations) pendingNames(key types.NamespacedName) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	if p := e.m[key]; p != nil {
		for name := range p.creates {
			out = append(out, name)
		}
	}
	return out
}

func (e *expectations) drop(key types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
