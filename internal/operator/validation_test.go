package operator_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
)

// base is a valid set; each case below breaks one thing.
const base = `
apiVersion: game.rally.dev/v1alpha1
kind: GameServerSet
metadata:
  name: valid
spec:
  replicas: 2
  gameVersion: "1.4.2"
  template:
    metadata:
      labels:
        app: match
    spec:
      containers:
      - name: match
        image: example.com/match:1
`

func manifest(t *testing.T, doc string, edit func(obj map[string]any)) *unstructured.Unstructured {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(obj)
	}
	return &unstructured.Unstructured{Object: obj}
}

func spec(obj map[string]any) map[string]any { return obj["spec"].(map[string]any) }

func podSpec(obj map[string]any) map[string]any {
	return spec(obj)["template"].(map[string]any)["spec"].(map[string]any)
}

// The API server refuses bad specs itself, with a message that says what
// to fix: the operator never sees them.
func TestInvalidSpecsAreRefusedByTheAPIServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := []struct {
		name string
		edit func(obj map[string]any)
		want []string
	}{
		{"negative replicas", func(o map[string]any) { spec(o)["replicas"] = -1 },
			[]string{"spec.replicas", "greater than or equal to 0"}},
		{"no containers", func(o map[string]any) { podSpec(o)["containers"] = []any{} },
			[]string{"spec.template.spec.containers must list at least one container"}},
		{"game version not a label value", func(o map[string]any) { spec(o)["gameVersion"] = "v 1.4!" },
			[]string{"spec.gameVersion", "should match"}},
		{"maxSurge and maxUnavailable both 0", func(o map[string]any) {
			spec(o)["updateStrategy"] = map[string]any{"rollingUpdate": map[string]any{"maxSurge": 0, "maxUnavailable": "0%"}}
		}, []string{"maxSurge and maxUnavailable cannot both be 0"}},
		{"maxSurge over 100%", func(o map[string]any) {
			spec(o)["updateStrategy"] = map[string]any{"rollingUpdate": map[string]any{"maxSurge": "150%"}}
		}, []string{"maxSurge must be a non-negative number or a percentage from 0% to 100%"}},
		{"rollingUpdate with Recreate", func(o map[string]any) {
			spec(o)["updateStrategy"] = map[string]any{"type": "Recreate", "rollingUpdate": map[string]any{"maxSurge": 1}}
		}, []string{"rollingUpdate applies only when updateStrategy.type is RollingUpdate"}},
		{"unknown scale-down policy", func(o map[string]any) { spec(o)["scaleDownPolicy"] = "Random" },
			[]string{"spec.scaleDownPolicy", `supported values: "Packed", "Distributed"`}},
		{"zero failure threshold", func(o map[string]any) { spec(o)["health"] = map[string]any{"failureThreshold": 0} },
			[]string{"spec.health.failureThreshold", "greater than or equal to 1"}},
		{"operator label in template", func(o map[string]any) {
			spec(o)["template"].(map[string]any)["metadata"] = map[string]any{"labels": map[string]any{gamev1.LabelState: "Ready"}}
		}, []string{"must not use the game.rally.dev/ prefix"}},
		{"hostname in template", func(o map[string]any) { podSpec(o)["hostname"] = "mine" },
			[]string{"hostname and subdomain must be unset"}},
		{"name too long for pod names", func(o map[string]any) {
			o["metadata"].(map[string]any)["name"] = strings.Repeat("a", 51)
		}, []string{"metadata.name must be a DNS-1035 label", "at most 50 characters"}},
		{"port out of range", func(o map[string]any) {
			spec(o)["ports"] = []any{map[string]any{"name": "game", "containerPort": 70000}}
		}, []string{"spec.ports[0].containerPort", "less than or equal to 65535"}},
		{"no template", func(o map[string]any) { delete(spec(o), "template") },
			[]string{"spec.template", "Required value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := manifest(t, base, tc.edit)
			obj.SetNamespace(e.ns)
			err := e.c.Create(context.Background(), obj)
			if err == nil {
				t.Fatal("accepted")
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want Invalid, got %v", err)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	// The unbroken base is accepted, so each refusal above is its edit's.
	obj := manifest(t, base, nil)
	obj.SetNamespace(e.ns)
	if err := e.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("valid set refused: %v", err)
	}
	got := e.getSet("valid")
	if got.Spec.Template.Labels["app"] != "match" {
		t.Errorf("template labels lost on the way through the API server: %v", got.Spec.Template.Labels)
	}
}

// The white paper's example manifest applies with only its API group (and
// the version of this API) changed, and gets the defaults.
func TestSeedExampleApplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "gameserverset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj := manifest(t, string(b), nil)
	obj.SetNamespace(e.ns)
	if err := e.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("the example is refused: %v", err)
	}
	var set gamev1.GameServerSet
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: "match-service"}, &set); err != nil {
		t.Fatal(err)
	}
	s := set.Spec
	if *s.Replicas != 3 || s.Template.Spec.Containers[0].LivenessProbe == nil || s.Template.Spec.Containers[0].Ports[0].ContainerPort != 8080 {
		t.Errorf("example read back as %+v", s)
	}
	if s.UpdateStrategy.Type != gamev1.RollingUpdate || s.ScaleDownPolicy != gamev1.Packed || s.PodManagementPolicy != gamev1.Parallel ||
		s.Health.PeriodSeconds != 5 || s.Health.FailureThreshold != 3 || s.Health.StartupTimeoutSeconds != 300 {
		t.Errorf("defaults not applied: %+v", s)
	}
}
