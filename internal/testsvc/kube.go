package testsvc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubeVersion is the Kubernetes release whose kube-apiserver and etcd the
// tests run against (built by scripts/test-deps.sh).
const KubeVersion = "1.37.2"

// kubeAssetsHint says how to get the control-plane binaries.
const kubeAssetsHint = "kube-apiserver and etcd for envtest are missing: run scripts/test-deps.sh " +
	"(or set KUBEBUILDER_ASSETS, or RALLY_TEST_SERVICES=optional to skip tests that need them)"

// ErrKubeAssetsMissing reports that the envtest binaries are not installed.
var ErrKubeAssetsMissing = errors.New(kubeAssetsHint)

// KubeAssets returns the folder holding kube-apiserver and etcd:
// KUBEBUILDER_ASSETS when set, else the cache scripts/test-deps.sh fills.
func KubeAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "rally", "envtest", KubeVersion)
}

// Kube is a throwaway Kubernetes control plane: a real kube-apiserver and
// etcd, with no kubelet, scheduler or controller-manager.
type Kube struct {
	Config *rest.Config

	env       *envtest.Environment
	mu        sync.Mutex
	installed map[string]bool
}

// NewKube starts a control plane and installs the CRDs found in crdDirs
// (paths relative to the repository root, e.g. "deploy/crds"). It returns
// ErrKubeAssetsMissing when the binaries are not installed. The caller
// must Stop it: the API server and etcd are child processes.
func NewKube(crdDirs ...string) (*Kube, error) {
	assets := KubeAssets()
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, ErrKubeAssetsMissing
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		env.Stop()
		return nil, fmt.Errorf("envtest: %w", err)
	}
	k := &Kube{Config: cfg, env: env, installed: map[string]bool{}}
	if err := k.InstallCRDs(crdDirs...); err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// InstallCRDs installs the CRDs found in dirs (relative to the repository
// root) and waits until the API server serves them. A folder already
// installed is skipped.
func (k *Kube) InstallCRDs(dirs ...string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var paths []string
	for _, d := range dirs {
		p, err := repoPath(d)
		if err != nil {
			return err
		}
		if !k.installed[p] {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	if _, err := envtest.InstallCRDs(k.Config, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true}); err != nil {
		return fmt.Errorf("envtest: install CRDs from %v: %w", paths, err)
	}
	for _, p := range paths {
		k.installed[p] = true
	}
	return nil
}

// Stop stops the API server and etcd.
func (k *Kube) Stop() error { return k.env.Stop() }

// User returns a config that authenticates as user (with groups), whose
// rights are only what RBAC objects grant it: to test that a Role is
// enough, e.g. for "system:serviceaccount:<ns>:<name>".
func (k *Kube) User(user string, groups ...string) (*rest.Config, error) {
	u, err := k.env.AddUser(envtest.User{Name: user, Groups: groups}, k.Config)
	if err != nil {
		return nil, fmt.Errorf("envtest: add user %s: %w", user, err)
	}
	return u.Config(), nil
}

// StartKube starts a control plane for one test (about 5 s), installs the
// CRDs from crdDirs (relative to the repository root) and stops it when tb
// ends. Without the binaries the test fails, or skips when
// RALLY_TEST_SERVICES=optional. Packages with several such tests should
// share one control plane through KubeMain and SharedKube.
func StartKube(tb testing.TB, crdDirs ...string) *rest.Config {
	tb.Helper()
	k, err := NewKube(crdDirs...)
	if err != nil {
		kubeFail(tb, err)
	}
	tb.Cleanup(func() {
		if err := k.Stop(); err != nil {
			tb.Logf("envtest stop: %v", err)
		}
	})
	return k.Config
}

func kubeFail(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrKubeAssetsMissing) && os.Getenv("RALLY_TEST_SERVICES") == "optional" {
		tb.Skip(err.Error())
	}
	tb.Fatal(err)
}

// shared is the one control plane of a test binary run under KubeMain.
var shared struct {
	sync.Mutex
	inMain bool
	kube   *Kube
	err    error
}

// KubeMain runs a package's tests with one control plane shared by every
// test that calls SharedKube, started on first use (tests that do not need
// it pay nothing) and stopped when the tests end. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testsvc.KubeMain(m)) }
func KubeMain(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.kube != nil {
		if err := shared.kube.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "envtest stop: %v\n", err)
		}
		shared.kube = nil
	}
	return code
}

// SharedKube returns the package's shared control plane (see KubeMain),
// starting it on the first call, with the CRDs from crdDirs installed.
// Tests sharing it should work in namespaces of their own.
func SharedKube(tb testing.TB, crdDirs ...string) *rest.Config {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		tb.Fatal("testsvc.SharedKube needs TestMain to run the tests through testsvc.KubeMain (which stops the control plane)")
	}
	if shared.kube == nil && shared.err == nil {
		shared.kube, shared.err = NewKube()
	}
	if shared.err != nil {
		kubeFail(tb, shared.err)
	}
	if err := shared.kube.InstallCRDs(crdDirs...); err != nil {
		tb.Fatal(err)
	}
	return rest.CopyConfig(shared.kube.Config)
}

// SharedKubeUser is SharedKube for a user without rights of its own (see
// Kube.User).
func SharedKubeUser(tb testing.TB, user string, groups ...string) *rest.Config {
	tb.Helper()
	SharedKube(tb)
	shared.Lock()
	defer shared.Unlock()
	cfg, err := shared.kube.User(user, groups...)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// repoPath resolves a path relative to the repository root (the folder
// holding go.mod, found by walking up from the test's working directory).
func repoPath(p string) (string, error) {
	if filepath.IsAbs(p) {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, p), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testsvc: no go.mod above the working directory to resolve %q", p)
		}
		dir = parent
	}
}
