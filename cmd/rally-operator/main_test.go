package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	"github.com/rallyhq/rally/internal/testsvc"
)

func TestMain(m *testing.M) { os.Exit(testsvc.KubeMain(m)) }

// lockedBuffer collects the operator's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--max-parallel", "0"}, io.Discard); err == nil {
		t.Error("--max-parallel 0 accepted")
	}
	if _, err := parseFlags([]string{"serve"}, io.Discard); err == nil {
		t.Error("a stray argument accepted")
	}
	o, err := parseFlags([]string{"--leader-elect", "--namespace", "games"}, io.Discard)
	if err != nil || !o.leaderElect || o.namespace != "games" || o.maxParallel != 16 {
		t.Errorf("parsed %+v, %v", o, err)
	}
}

// writeKubeconfig turns the test API server's config into a kubeconfig
// file, which is what a person running the operator beside a cluster has.
// The operator acts as actAs (impersonation), so it has only that
// identity's permissions.
func writeKubeconfig(t *testing.T, cfg *rest.Config, actAs string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken, Impersonate: actAs}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// apply creates every object of a manifest file of the repository.
func apply(t *testing.T, c client.Client, path string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.Create(context.Background(), &obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: %s %s: %v", path, obj.GetKind(), obj.GetName(), err)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url string) (int, string) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last: %s", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The real binary, started beside an API server with --kubeconfig and
// only the permissions deploy/rbac grants its ServiceAccount: it wins the
// leader election, answers its probes, reconciles a set (pods, Service,
// status, finalizer, Events), reports metrics, lets a deleted set go and
// exits cleanly on SIGTERM. The deploy/ manifests are applied on the way,
// so they are checked to be valid objects.
func TestBinaryRunsAgainstAPIServer(t *testing.T) {
	cfg := testsvc.SharedKube(t, "deploy/crds")
	bin := filepath.Join(t.TempDir(), "rally-operator")
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	gamev1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	// What `kubectl apply -k deploy/` applies, in its order.
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &kust); err != nil || len(kust.Resources) == 0 {
		t.Fatalf("kustomization: %v %+v", err, kust)
	}
	for _, f := range kust.Resources {
		apply(t, c, filepath.Join("deploy", f))
	}

	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	logs := new(lockedBuffer)
	cmd := exec.Command(bin,
		"--kubeconfig", writeKubeconfig(t, cfg, "system:serviceaccount:rally-system:rally-operator"),
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr,
		"--allocation-grpc-address", freeAddr(t), "--allocation-http-address", freeAddr(t),
		"--leader-elect", "--leader-election-namespace", "rally-system", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("operator output:\n%s", logs.String())
		}
	})

	poll(t, "/readyz", func() (bool, string) {
		code, body := get("http://" + probeAddr + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if code, _ := get("http://" + probeAddr + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}

	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bin-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	n := int32(2)
	set := &gamev1.GameServerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "bin", Namespace: ns.Name},
		Spec: gamev1.GameServerSetSpec{Replicas: &n, Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "game", Image: "example.com/game:1"}}},
		}},
	}
	if err := c.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	poll(t, "2 pods, the Service, the status and the finalizer", func() (bool, string) {
		var pods corev1.PodList
		c.List(ctx, &pods, client.InNamespace(ns.Name), client.MatchingLabels{gamev1.LabelSet: "bin"})
		var svc corev1.Service
		svcErr := c.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: "bin"}, &svc)
		var got gamev1.GameServerSet
		c.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: "bin"}, &got)
		return len(pods.Items) == 2 && svcErr == nil && got.Status.Replicas == 2 && len(got.Finalizers) == 1,
			fmt.Sprintf("%d pods, service %v, status %+v, finalizers %v", len(pods.Items), svcErr, got.Status, got.Finalizers)
	})
	poll(t, "an Event", func() (bool, string) {
		var evs eventsv1.EventList
		c.List(ctx, &evs, client.InNamespace(ns.Name))
		for _, ev := range evs.Items {
			if ev.Reason == "SuccessfulCreate" && ev.Regarding.Name == "bin" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
	var lease coordinationv1.Lease
	if err := c.Get(ctx, types.NamespacedName{Namespace: "rally-system", Name: "rally-operator.game.rally.dev"}, &lease); err != nil {
		t.Errorf("leader-election Lease: %v", err)
	} else if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Errorf("Lease has no holder: %+v", lease.Spec)
	}
	poll(t, "metrics", func() (bool, string) {
		code, body := get("http://" + metricsAddr + "/metrics")
		return code == http.StatusOK && strings.Contains(body, "rally_operator_pods_created_total 2") &&
			strings.Contains(body, `rally_operator_gameservers{namespace="`+ns.Name+`",set="bin",state="Starting"} 2`), body
	})

	if err := c.Delete(ctx, set); err != nil {
		t.Fatal(err)
	}
	poll(t, "the deleted set gone", func() (bool, string) {
		err := c.Get(ctx, client.ObjectKeyFromObject(set), &gamev1.GameServerSet{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the operator was refused something deploy/rbac should grant:\n%s", logs.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15 s of SIGTERM")
	}
}
