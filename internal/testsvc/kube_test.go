package testsvc

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) { os.Exit(KubeMain(m)) }

func TestRepoPathFindsModuleRoot(t *testing.T) {
	p, err := repoPath("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(filepath.Dir(p)) == "testsvc" {
		t.Fatalf("resolved against the package folder, not the module root: %s", p)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("resolved %s: %v", p, err)
	}
}

// The shared control plane is a real API server: an object written is read
// back, and a second caller gets the same server.
func TestSharedKubeServesTheAPI(t *testing.T) {
	cfg := SharedKube(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "testsvc-kube"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	again := SharedKube(t)
	if again.Host != cfg.Host {
		t.Fatalf("second SharedKube started another server: %s vs %s", again.Host, cfg.Host)
	}
	cs2, err := kubernetes.NewForConfig(again)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs2.CoreV1().Namespaces().Get(ctx, "testsvc-kube", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID == "" {
		t.Fatal("namespace read back without a uid")
	}
}

func TestKubeAssetsPrefersEnv(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", "/somewhere/else")
	if got := KubeAssets(); got != "/somewhere/else" {
		t.Fatalf("KubeAssets = %q", got)
	}
}
