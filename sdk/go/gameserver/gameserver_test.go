package gameserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(testsvc.KubeMain(m)) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// namespaces numbers the namespaces tests make (one each).
var namespaces atomic.Int64

// cluster is a namespace of the shared test API server with one
// game-server pod, and the config of that pod's service account, bound to
// the Role game servers get from deploy/rbac/gameserver.yaml.
type cluster struct {
	admin *kubernetes.Clientset
	sa    *rest.Config
	ns    string
	pod   string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	cfg := testsvc.SharedKube(t)
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := fmt.Sprintf("sdk-%d-%06x", namespaces.Add(1), rand.IntN(1<<24))
	mustDo(t, func() error {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	// The Role and RoleBinding game servers get in deploy/.
	role, binding := gameServerRBAC(t)
	role.Namespace, binding.Namespace = ns, ns
	for i := range binding.Subjects {
		binding.Subjects[i].Namespace = ns
	}
	mustDo(t, func() error {
		_, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{})
		return err
	})
	mustDo(t, func() error {
		_, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{})
		return err
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "arena-0", Namespace: ns, Labels: map[string]string{
			gamev1.LabelSet: "arena", gamev1.LabelState: string(gamev1.StateStarting), gamev1.LabelGameVersion: "1.4.2",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "game", Image: "example.com/arena:1.4.2"}}},
	}
	mustDo(t, func() error {
		_, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
	sa := testsvc.SharedKubeUser(t, "system:serviceaccount:"+ns+":"+binding.Subjects[0].Name, "system:serviceaccounts", "system:serviceaccounts:"+ns)
	return &cluster{admin: admin, sa: sa, ns: ns, pod: "arena-0"}
}

// gameServerRBAC reads the Role and RoleBinding of deploy/rbac/gameserver.yaml.
func gameServerRBAC(t *testing.T) (*rbacv1.Role, *rbacv1.RoleBinding) {
	t.Helper()
	data, err := os.ReadFile("../../../deploy/rbac/gameserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	var binding *rbacv1.RoleBinding
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Role":
			role = &rbacv1.Role{}
			err = yaml.Unmarshal([]byte(doc), role)
		case "RoleBinding":
			binding = &rbacv1.RoleBinding{}
			err = yaml.Unmarshal([]byte(doc), binding)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if role == nil || binding == nil || len(binding.Subjects) == 0 {
		t.Fatal("deploy/rbac/gameserver.yaml lacks the Role or the RoleBinding")
	}
	return role, binding
}

func mustDo(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) get(t *testing.T) *corev1.Pod {
	t.Helper()
	p, err := c.admin.CoreV1().Pods(c.ns).Get(context.Background(), c.pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// allocate plays the allocator: Ready -> Allocated with metadata, on the
// version read (as internal/allocation does).
func (c *cluster) allocate(t *testing.T, meta map[string]string) {
	t.Helper()
	p := c.get(t)
	if p.Labels[gamev1.LabelState] != string(gamev1.StateReady) {
		t.Fatalf("allocating a %s server", p.Labels[gamev1.LabelState])
	}
	b, _ := json.Marshal(meta)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": p.ResourceVersion,
		"labels":          map[string]string{gamev1.LabelState: string(gamev1.StateAllocated)},
		"annotations": map[string]string{
			gamev1.AnnotationAllocation:  string(b),
			gamev1.AnnotationAllocatedAt: time.Now().UTC().Format(time.RFC3339Nano),
		},
	}})
	if _, err := c.admin.CoreV1().Pods(c.ns).Patch(context.Background(), c.pod, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// watcher collects what Watch delivers.
type watcher struct {
	ch   chan GameServer
	done chan error
	stop context.CancelFunc
}

func startWatch(t *testing.T, s *SDK) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{ch: make(chan GameServer, 64), done: make(chan error, 1), stop: cancel}
	go func() { w.done <- s.Watch(ctx, func(gs GameServer) { w.ch <- gs }) }()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next waits for the watch to deliver a server in state want, failing on
// a deadline.
func (w *watcher) next(t *testing.T, want State) GameServer {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case gs := <-w.ch:
			if gs.State == want {
				return gs
			}
		case err := <-w.done:
			t.Fatalf("watch ended waiting for %s: %v", want, err)
		case <-deadline:
			t.Fatalf("watch did not deliver %s", want)
		}
	}
}

// The whole life of a game server through the SDK, against a real API
// server, with only the rights the game-server Role grants: Starting ->
// Ready -> (allocated by the allocator) -> Ready -> Allocated (by itself)
// -> Shutdown; labels; health pings; Watch sees each step; a transition
// out of Shutdown is refused; deleting the pod ends Watch.
func TestSDKLifeCycleOnTheAPIServer(t *testing.T) {
	c := newCluster(t)
	t.Setenv(EnvName, c.pod)
	t.Setenv(EnvNamespace, c.ns)
	t.Setenv(EnvLocal, "")
	s, err := New(Options{Config: c.sa, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := startWatch(t, s)
	if gs := w.next(t, Starting); gs.Set != "arena" || gs.GameVersion != "1.4.2" || gs.Name != "arena-0" {
		t.Fatalf("first state: %+v", gs)
	}

	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.get(t).Labels[gamev1.LabelState]; got != "Ready" {
		t.Fatalf("pod state after Ready: %q", got)
	}
	w.next(t, Ready)

	if err := s.SetLabel(ctx, "map", "dust"); err != nil {
		t.Fatal(err)
	}
	if got := c.get(t).Labels["sdk.game.rally.dev/map"]; got != "dust" {
		t.Fatalf("label after SetLabel: %q", got)
	}
	if err := s.SetLabel(ctx, "bad key!", "x"); err == nil {
		t.Fatal("SetLabel accepted an invalid key")
	}

	// The allocator hands the server to a match; the server waits for it.
	got := make(chan *GameServer, 1)
	go func() {
		gs, err := s.WaitAllocated(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- gs
	}()
	c.allocate(t, map[string]string{"match_id": "m-1", "players": "ann,bob"})
	var gs *GameServer
	select {
	case gs = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("WaitAllocated did not return")
	}
	if gs == nil || gs.Allocation["match_id"] != "m-1" || gs.Allocation["players"] != "ann,bob" || gs.AllocatedAt.IsZero() {
		t.Fatalf("allocated server: %+v", gs)
	}
	if gs.Labels["map"] != "dust" {
		t.Fatalf("labels lost on allocation: %v", gs.Labels)
	}
	w.next(t, Allocated)

	// The game ends; back to the pool, allocation cleared.
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	pod := c.get(t)
	if pod.Labels[gamev1.LabelState] != "Ready" || pod.Annotations[gamev1.AnnotationAllocation] != "" || pod.Annotations[gamev1.AnnotationAllocatedAt] != "" {
		t.Fatalf("after Ready from Allocated: labels %v annotations %v", pod.Labels, pod.Annotations)
	}
	if back := w.next(t, Ready); back.Allocation != nil {
		t.Fatalf("allocation still reported after Ready: %v", back.Allocation)
	}

	// Self-allocation, twice (the second is a no-op), then Shutdown.
	if err := s.Allocate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Allocate(ctx); err != nil {
		t.Fatalf("Allocate when Allocated: %v", err)
	}
	if pod := c.get(t); pod.Labels[gamev1.LabelState] != "Allocated" || pod.Annotations[gamev1.AnnotationAllocatedAt] == "" {
		t.Fatalf("after SDK Allocate: %v %v", pod.Labels, pod.Annotations)
	}
	w.next(t, Allocated)
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	w.next(t, Shutdown)
	if err := s.Ready(ctx); !errors.Is(err, ErrTransition) {
		t.Fatalf("Ready after Shutdown: %v, want ErrTransition", err)
	}
	if err := s.Allocate(ctx); !errors.Is(err, ErrTransition) {
		t.Fatalf("Allocate after Shutdown: %v, want ErrTransition", err)
	}

	// The operator deletes a Shutdown server: Watch ends with ErrGone.
	if err := c.admin.CoreV1().Pods(c.ns).Delete(ctx, c.pod, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if !errors.Is(err, ErrGone) {
			t.Fatalf("watch ended with %v, want ErrGone", err)
		}
		w.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end when the pod was deleted")
	}
}

// StartHealth keeps patching the health annotation with fresh times until
// stopped.
func TestHealthPingsPatchTheAnnotation(t *testing.T) {
	c := newCluster(t)
	s, err := New(Options{Config: c.sa, Name: c.pod, Namespace: c.ns, HealthPeriod: 20 * time.Millisecond, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := s.StartHealth(context.Background())
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d distinct health pings", len(seen))
		}
		v := c.get(t).Annotations[gamev1.AnnotationHealth]
		if v != "" {
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
				t.Fatalf("health annotation %q", v)
			}
			seen[v] = true
		}
	}
	stop()
	last := c.get(t).Annotations[gamev1.AnnotationHealth]
	gs, err := s.GameServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if gs.LastHealth.Format(time.RFC3339Nano) != last {
		t.Fatalf("GameServer().LastHealth %v, pod says %s", gs.LastHealth, last)
	}
	if gs.State != Starting {
		t.Fatalf("health pings changed the state to %s", gs.State)
	}
}

// A write carrying an old resourceVersion is refused: Ready never
// overwrites an allocation made since the SDK read the pod.
func TestStaleWriteConflicts(t *testing.T) {
	c := newCluster(t)
	st, err := newKubeStore(c.sa, c.ns, c.pod)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, err := st.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.patch(ctx, &podPatch{labels: map[string]*string{gamev1.LabelState: ptr("Ready")}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.patch(ctx, &podPatch{resourceVersion: old.ResourceVersion, labels: map[string]*string{gamev1.LabelState: ptr("Shutdown")}})
	if !errors.Is(err, errConflict) {
		t.Fatalf("stale write: %v, want a conflict", err)
	}
	if got := c.get(t).Labels[gamev1.LabelState]; got != "Ready" {
		t.Fatalf("stale write changed the state to %s", got)
	}
}

// Without the Role, a service account cannot touch the pod: the Role in
// deploy/ is what lets the SDK work (the other tests show it is enough).
func TestServiceAccountWithoutTheRoleIsRefused(t *testing.T) {
	c := newCluster(t)
	other := testsvc.SharedKubeUser(t, "system:serviceaccount:"+c.ns+":nobody")
	s, err := New(Options{Config: other, Name: c.pod, Namespace: c.ns, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("Ready without rights: %v", err)
	}
}

// Concurrent SDK calls from one process are safe (run with -race) and all
// land.
func TestConcurrentLabels(t *testing.T) {
	c := newCluster(t)
	s, err := New(Options{Config: c.sa, Name: c.pod, Namespace: c.ns, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := s.SetLabel(context.Background(), fmt.Sprintf("k%d", i), "v"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Go(func() {
		if err := s.Ready(context.Background()); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	pod := c.get(t)
	for i := range 8 {
		if pod.Labels[fmt.Sprintf("sdk.game.rally.dev/k%d", i)] != "v" {
			t.Fatalf("label k%d lost: %v", i, pod.Labels)
		}
	}
	if pod.Labels[gamev1.LabelState] != "Ready" {
		t.Fatalf("state %s", pod.Labels[gamev1.LabelState])
	}
}

func TestNewOutsideAClusterSaysHowToDevelopLocally(t *testing.T) {
	t.Setenv(EnvLocal, "")
	t.Setenv(EnvName, "")
	t.Setenv(EnvNamespace, "")
	_, err := New(Options{Log: quiet})
	if err == nil || !strings.Contains(err.Error(), EnvLocal) {
		t.Fatalf("New outside a cluster: %v", err)
	}
	t.Setenv(EnvName, "x")
	t.Setenv(EnvNamespace, "y")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err = New(Options{Log: quiet})
	if err == nil || !strings.Contains(err.Error(), EnvLocal) {
		t.Fatalf("New outside a cluster: %v", err)
	}
	t.Setenv(EnvHealthPeriod, "soon")
	if _, err := New(Options{Local: true, Log: quiet}); err == nil || !strings.Contains(err.Error(), EnvHealthPeriod) {
		t.Fatalf("bad health period accepted: %v", err)
	}
}
