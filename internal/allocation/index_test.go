package allocation

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

func testPod(name, rv string, state gamev1.GameServerState) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "ns", UID: types.UID(name), ResourceVersion: rv,
		Labels: map[string]string{gamev1.LabelSet: "arena", gamev1.LabelState: string(state)},
	}}
}

// The index hands a pod to one claim at a time, skips a version it has
// used up until the informer brings a newer one, and drops pods that stop
// being Ready.
func TestIndexClaims(t *testing.T) {
	ix := newIndex()
	ix.set(testPod("a", "1", gamev1.StateReady))
	ix.set(testPod("b", "1", gamev1.StateStarting))
	all := labels.Everything()

	p := ix.claim("ns/arena", all)
	if p == nil || p.Name != "a" {
		t.Fatalf("claim: %v", p)
	}
	if q := ix.claim("ns/", all); q != nil {
		t.Fatalf("a busy pod was claimed twice: %v", q.Name)
	}
	ix.release(p, true) // refused by the API server: version 1 is used up
	if q := ix.claim("ns/", all); q != nil {
		t.Fatal("a used-up version was claimed again")
	}
	ix.set(testPod("a", "2", gamev1.StateReady)) // e.g. a health ping
	q := ix.claim("ns/", all)
	if q == nil || q.ResourceVersion != "2" {
		t.Fatalf("newer version not claimable: %v", q)
	}
	ix.release(q, false) // failed for another reason: may be tried again
	if q := ix.claim("ns/arena", all); q == nil {
		t.Fatal("a released pod was not claimable")
	} else {
		ix.release(q, true)
	}
	ix.set(testPod("a", "3", gamev1.StateAllocated))
	if ix.readyCount() != 0 || len(ix.stale) != 0 {
		t.Fatalf("after allocation: %d ready, %d stale", ix.readyCount(), len(ix.stale))
	}
	ix.set(testPod("b", "2", gamev1.StateReady))
	if q := ix.claim("ns/other", all); q != nil {
		t.Fatal("claimed from another set")
	}
	if q := ix.claim("ns/", labels.SelectorFromSet(labels.Set{"x": "y"})); q != nil {
		t.Fatal("claimed a pod the selector does not match")
	}
	ix.delete(testPod("b", "2", gamev1.StateReady))
	if ix.readyCount() != 0 || len(ix.ready) != 0 {
		t.Fatalf("after delete: %v", ix.ready)
	}
	deleting := testPod("c", "1", gamev1.StateReady)
	deleting.DeletionTimestamp = &metav1.Time{}
	ix.set(deleting)
	if ix.readyCount() != 0 {
		t.Fatal("a pod being deleted is Ready for allocation")
	}
}
