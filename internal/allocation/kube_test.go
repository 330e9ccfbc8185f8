package allocation

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/testsvc"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(testsvc.KubeMain(m))
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := gamev1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// kube is a namespace of the package's shared API server (with the
// GameServerSet CRD installed), an admin clientset and a direct client.
type kube struct {
	cfg   *rest.Config
	cs    *kubernetes.Clientset
	c     client.Client
	ns    string
	count atomic.Int64
}

var namespaces atomic.Int64

func newKube(tb testing.TB) *kube {
	tb.Helper()
	cfg := testsvc.SharedKube(tb, "deploy/crds")
	// The allocators of a test are the only clients: no client-side limit.
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	k := &kube{cfg: cfg, cs: cs, c: c, ns: fmt.Sprintf("alloc-%d-%06x", namespaces.Add(1), rand.IntN(1<<24))}
	_, err = cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.ns}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// server describes game-server pods to create.
type server struct {
	set, version string
	state        gamev1.GameServerState
	ip           string // set as the pod's status, as a kubelet would
	labels       map[string]string
}

// create makes n pods <set>-<i> (numbered on from the pods made before),
// 8 at a time.
func (k *kube) create(tb testing.TB, n int, s server) []string {
	tb.Helper()
	if s.state == "" {
		s.state = gamev1.StateReady
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", s.set, k.count.Add(1)-1)
	}
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Go(func() {
			for name := range work {
				if err := k.createPod(name, s); err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		tb.Fatal(err)
	}
	return names
}

func (k *kube) createPod(name string, s server) error {
	ctx := context.Background()
	labels := map[string]string{gamev1.LabelSet: s.set, gamev1.LabelState: string(s.state), gamev1.LabelGameVersion: s.version}
	for key, v := range s.labels {
		labels[key] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns, Labels: labels},
		Spec: corev1.PodSpec{
			Hostname: name, Subdomain: s.set,
			Containers: []corev1.Container{{
				Name: "game", Image: "example.com/arena:" + s.version,
				Ports: []corev1.ContainerPort{{Name: "game", ContainerPort: 7777, Protocol: corev1.ProtocolUDP}, {ContainerPort: 8080}},
			}},
		},
	}
	created, err := k.cs.CoreV1().Pods(k.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if s.ip == "" {
		return nil
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.PodIP = s.ip
	created.Status.PodIPs = []corev1.PodIP{{IP: s.ip}}
	_, err = k.cs.CoreV1().Pods(k.ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (k *kube) pod(tb testing.TB, name string) *corev1.Pod {
	tb.Helper()
	p, err := k.cs.CoreV1().Pods(k.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// replica is one allocator replica: its own manager (informer cache of the
// test's namespace) and gRPC and REST servers on loopback ports.
type replica struct {
	a        *Allocator
	grpcAddr string
	httpAddr string
	conn     *grpc.ClientConn
	reg      *prometheus.Registry
}

func (k *kube) startReplica(tb testing.TB, opts Options) *replica {
	tb.Helper()
	mgr, err := manager.New(k.cfg, manager.Options{
		Scheme:                 scheme,
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{k.ns: {}}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		tb.Fatal(err)
	}
	r := &replica{reg: prometheus.NewRegistry()}
	if opts.DefaultNamespace == "" {
		opts.DefaultNamespace = k.ns
	}
	if opts.Log == nil {
		opts.Log = quiet
	}
	opts.Registerer = r.reg
	r.a, err = New(context.Background(), mgr.GetClient(), mgr.GetCache(), mgr.GetClient(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r.grpcAddr, r.httpAddr = gl.Addr().String(), hl.Addr().String()
	if err := mgr.Add(&Server{Allocator: r.a, GRPCListener: gl, HTTPListener: hl}); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("manager: %v", err)
		}
	})
	waitFor(tb, "the allocator's index to sync", r.a.Synced)
	r.conn, err = grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.conn.Close() })
	// Connect now, so the first allocation does not pay for it.
	r.conn.Connect()
	waitFor(tb, "the gRPC connection", func() bool { return r.conn.GetState() == connectivity.Ready })
	return r
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitReady waits until the replica's index holds n Ready servers.
func (r *replica) waitReady(tb testing.TB, n int) {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("%d Ready servers in the index", n), func() bool { return r.a.ix.readyCount() == n })
}

// waitIndexed waits until the replica's index holds each named pod as an
// allocatable Ready server (a newer version than any it used up).
func (r *replica) waitIndexed(tb testing.TB, ns string, names ...string) {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("%v Ready in the index", names), func() bool {
		ix := r.a.ix
		ix.mu.Lock()
		defer ix.mu.Unlock()
		found := 0
		for _, p := range ix.ready[ns+"/"] {
			if slices.Contains(names, p.Name) && ix.stale[p.UID] != p.ResourceVersion {
				found++
			}
		}
		return found == len(names)
	})
}

func counter(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	total := 0.0
	for m := range ch {
		var d dto.Metric
		m.Write(&d)
		total += d.GetCounter().GetValue()
	}
	return total
}
