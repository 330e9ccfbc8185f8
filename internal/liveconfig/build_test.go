package liveconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const examples = "../../examples/liveconfig"

func mustBuild(t *testing.T, files Files) *Snapshot {
	t.Helper()
	s, err := Build(files, Options{Source: "test"})
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			for _, p := range inv.Problems {
				t.Log(p)
			}
		}
		t.Fatal(err)
	}
	return s
}

func exampleFiles(t *testing.T) Files {
	t.Helper()
	f, err := ReadDir(examples)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestConfigExamplesBuildAndResolve(t *testing.T) {
	s := mustBuild(t, exampleFiles(t))
	if got := strings.Join(s.Namespaces(), ","); got != "economy,features,matchmaking" {
		t.Fatalf("namespaces %s", got)
	}
	if !strings.HasPrefix(s.Version(), "sha256:") || s.Version() != ContentVersion(exampleFiles(t)) {
		t.Fatalf("version %q is not the content hash", s.Version())
	}
	if s.Experiment("double_gold") == nil || s.Experiment("new_shop_rollout") == nil {
		t.Fatal("the example experiment and release are missing")
	}
	// The release ramps 5% -> 100% from June 1st to 15th 2026: after the
	// ramp every targeted player is in it, before it only 5%.
	after := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	eu := Player{ID: "p-1", Region: "EU", Platform: "Android", AppVersion: "1.4.0"}
	r := s.Resolve(eu, after)
	if v, ok := r.Variant("new_shop_rollout"); !ok || v != "on" || !r.Bool("features.new_shop", false) {
		t.Fatalf("a targeted player after the ramp: variant %q %v, new_shop %v", v, ok, r.Bool("features.new_shop", false))
	}
	for name, p := range map[string]Player{
		"old client":     {ID: "p-1", Region: "eu", Platform: "android", AppVersion: "1.3.9"},
		"other region":   {ID: "p-1", Region: "na", Platform: "android", AppVersion: "2.0.0"},
		"other platform": {ID: "p-1", Region: "eu", Platform: "ios", AppVersion: "2.0.0"},
		"no version":     {ID: "p-1", Region: "eu", Platform: "android"},
		"excluded":       {ID: "qa-account-1", Region: "eu", Platform: "android", AppVersion: "2.0.0"},
	} {
		r := s.Resolve(p, after)
		if _, ok := r.Variant("new_shop_rollout"); ok || r.Bool("features.new_shop", true) {
			t.Errorf("%s: in the release", name)
		}
	}
	// Values: base, a path into an object, and defaults for the absent.
	if got := r.Float("economy.shop.discount", -1); got != 0 {
		t.Fatalf("economy.shop.discount = %v", got)
	}
	if got := r.Int("matchmaking.max_wait_seconds", -1); got != 30 {
		t.Fatalf("matchmaking.max_wait_seconds = %v", got)
	}
	if got := r.String("features.chat_filter", ""); got != "strict" {
		t.Fatalf("features.chat_filter = %q", got)
	}
	if got := r.Int("economy.nope", 7); got != 7 {
		t.Fatalf("absent key = %v, want the default", got)
	}
	var regions []string
	if err := r.Decode("matchmaking.regions", &regions); err != nil || strings.Join(regions, ",") != "eu,na,asia" {
		t.Fatalf("Decode regions = %v, %v", regions, err)
	}
}

// Problems name the file, the place in it and the reason; every problem of
// a configuration is reported at once.
func TestConfigProblemsArePrecise(t *testing.T) {
	valid := "values:\n  gold: 1\n  shop:\n    discount: 0\n"
	schema := `{"type":"object","properties":{"gold":{"type":"integer","minimum":0},
	  "shop":{"type":"object","properties":{"discount":{"type":"number","maximum":0.5}}}}}`
	exp := func(body string) Files {
		return Files{"eco.yaml": []byte(valid + body), "eco.schema.json": []byte(schema)}
	}
	cases := []struct {
		name  string
		files Files
		want  []string // substrings of problems, in order
	}{
		{"yaml syntax", Files{"eco.yaml": []byte("values:\n  gold: [1\n")}, []string{"eco.yaml: yaml: line"}},
		{"json syntax", Files{"eco.json": []byte("{\"values\": {\"gold\": 1,}}")}, []string{"eco.json: line 1 column 23"}},
		{"two yaml documents", Files{"eco.yaml": []byte("values: {}\n---\nvalues: {}\n")}, []string{"more than one YAML document"}},
		{"unknown section", Files{"eco.yaml": []byte("valuez: {}\n")}, []string{"eco.yaml: /: additional properties 'valuez' not allowed"}},
		{"schema violation", Files{"eco.yaml": []byte("values:\n  gold: -1\n"), "eco.schema.json": []byte(schema)},
			[]string{"eco.yaml: /values/gold: minimum: got -1, want 0"}},
		{"broken schema", Files{"eco.yaml": []byte(valid), "eco.schema.json": []byte(`{"type": 12}`)},
			[]string{"eco.schema.json: invalid schema"}},
		{"bad namespace", Files{"bad name.yaml": []byte(valid)}, []string{"bad name.yaml: namespace segment \"bad name\""}},
		{"same namespace twice", Files{"eco.yaml": []byte(valid), "eco.json": []byte(`{"values":{}}`)},
			[]string{"namespace eco is also declared by"}},
		{"weights", exp("experiments:\n  - id: e\n    variants:\n      - {name: a, weight: 30}\n      - {name: b, weight: 60}\n"),
			[]string{"eco.yaml: /experiments/0/variants: weights add up to 90%, want 100%"}},
		{"weight decimals", exp("experiments:\n  - id: e\n    variants:\n      - {name: a, weight: 33.333}\n      - {name: b, weight: 66.667}\n"),
			[]string{"/experiments/0/variants/0/weight: 33.333% has more than two decimals"}},
		{"typo in variant", exp("experiments:\n  - id: e\n    variants:\n      - {name: a, wieght: 100}\n"),
			[]string{"/experiments/0/variants/0: missing property 'weight'", "additional properties 'wieght' not allowed"}},
		{"override of a missing key", exp("releases:\n  - id: r\n    values:\n      eco.silver: 2\n"),
			[]string{"eco.yaml: /releases/0/values/eco.silver: no value eco.silver"}},
		{"override into a non-object", exp("releases:\n  - id: r\n    values:\n      eco.gold.x: 2\n"),
			[]string{"/releases/0/values/eco.gold.x: eco.gold is not an object"}},
		{"override breaks the schema", exp("experiments:\n  - id: e\n    variants:\n      - name: a\n        weight: 100\n        values:\n          eco.shop.discount: 0.9\n"),
			[]string{"eco.yaml: /experiments/0/variants/0/values: breaks eco.schema.json at eco.shop.discount: maximum: got 0.9, want 0.5"}},
		{"times", exp("releases:\n  - id: r\n    start: tomorrow\n    end: 2026-01-01T00:00:00Z\n    values: {eco.gold: 2}\n"),
			[]string{"/releases/0/start: \"tomorrow\" is not an RFC 3339 time"}},
		{"end before start", exp("releases:\n  - id: r\n    start: 2026-02-01T00:00:00Z\n    end: 2026-01-01T00:00:00Z\n    values: {eco.gold: 2}\n"),
			[]string{"/releases/0/end: end 2026-01-01T00:00:00Z is not after start"}},
		{"ramp", exp("releases:\n  - id: r\n    rollout: {from: 5, to: 150, start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z}\n    values: {eco.gold: 2}\n"),
			[]string{"/releases/0/rollout/to: maximum: got 150, want 100"}},
		{"app version", exp("releases:\n  - id: r\n    target: {app_version: \">=one\"}\n    values: {eco.gold: 2}\n"),
			[]string{"/releases/0/target/app_version: \"one\" is not a version"}},
		{"force to a missing variant", exp("experiments:\n  - id: e\n    force: {qa: c}\n    variants:\n      - {name: a, weight: 100}\n"),
			[]string{"/experiments/0/force/qa: no variant \"c\""}},
		{"duplicate ids", exp("experiments:\n  - id: e\n    variants: [{name: a, weight: 100}]\n  - id: e\n    variants: [{name: a, weight: 100}]\n"),
			[]string{"/experiments/1/id: id \"e\" is already used by eco.yaml#/experiments/0"}},
		{"overlapping layer slices", exp("experiments:\n  - id: e1\n    layer: L\n    layer_slice: [0, 60]\n    variants: [{name: a, weight: 100}]\n  - id: e2\n    layer: L\n    layer_slice: [50, 100]\n    variants: [{name: a, weight: 100}]\n"),
			[]string{"experiment e2: its slice [50, 100) of layer L overlaps experiment e1's [0, 60)"}},
		{"slice without layer", exp("experiments:\n  - id: e\n    layer_slice: [0, 50]\n    variants: [{name: a, weight: 100}]\n"),
			[]string{"/experiments/0/layer_slice: layer_slice needs a layer"}},
		{"key shadows a namespace", Files{"a.yaml": []byte("values: {b: 1}\n"), "a/b.yaml": []byte("values: {c: 1}\n")},
			[]string{"key a.b is also the namespace of a/b.yaml"}},
		{"not a configuration file", Files{"notes.txt": []byte("x")}, []string{"notes.txt: not a configuration file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(c.files, Options{})
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("want an InvalidError, got %v", err)
			}
			var all []string
			for _, p := range inv.Problems {
				all = append(all, p.String())
			}
			joined := strings.Join(all, "\n")
			for _, w := range c.want {
				if !strings.Contains(joined, w) {
					t.Errorf("problems do not mention %q:\n%s", w, joined)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Error() is not one line: %q", err.Error())
			}
		})
	}
}

func TestConfigOverridesCopyNeverMutate(t *testing.T) {
	s := mustBuild(t, Files{"eco.yaml": []byte(`
values:
  shop: {discount: 0, items: {sword: 10, shield: 5}}
experiments:
  - id: e
    variants:
      - name: cheap
        weight: 100
        values:
          eco.shop.items.sword: 8
          eco.shop.discount: 0.2
`)})
	r := s.Resolve(Player{ID: "p"}, time.Now())
	if r.Float("eco.shop.items.sword", 0) != 8 || r.Float("eco.shop.discount", 0) != 0.2 || r.Float("eco.shop.items.shield", 0) != 5 {
		t.Fatalf("resolved shop %v", must(r.Value("eco.shop")))
	}
	base, _ := s.Value("eco.shop")
	if base.(map[string]any)["items"].(map[string]any)["sword"] != 10.0 || base.(map[string]any)["discount"] != 0.0 {
		t.Fatalf("an override changed the snapshot: %v", base)
	}
	if !r.Overridden("eco.shop") {
		t.Fatal("Overridden(eco.shop) = false")
	}
	if got := r.Select([]string{"eco"}); len(got) != 1 || got[0] != "eco.shop" {
		t.Fatalf("Select(eco) = %v", got)
	}
}

func must(v any, _ bool) any { return v }

func TestConfigReadDirSkipsHiddenAndFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	write := func(p, body string) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The layout of a mounted ConfigMap: files are links into ..data.
	write("..2026_01_01/eco.yaml", "values: {gold: 1}\n")
	if err := os.Symlink("..2026_01_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/eco.yaml", filepath.Join(dir, "eco.yaml")); err != nil {
		t.Fatal(err)
	}
	write(".git/config.yaml", "x")
	write("pve/boss.yaml", "values: {hp: 100}\n")
	write("pve/.boss.yaml.swp", "x")
	write("pve/boss.yaml~", "x")
	write("README.md", "x")
	files, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(files.Paths(), ","); got != "eco.yaml,pve/boss.yaml" {
		t.Fatalf("read %s", got)
	}
	s := mustBuild(t, files)
	if r := s.Resolve(Player{ID: "p"}, time.Now()); r.Int("pve.boss.hp", 0) != 100 || r.Int("eco.gold", 0) != 1 {
		t.Fatalf("keys %v", s.Keys())
	}
}

func TestExperimentVersionRanges(t *testing.T) {
	cases := []struct {
		rng, v string
		want   bool
	}{
		{">=1.4.0 <2.0.0", "1.4.0", true},
		{">=1.4.0 <2.0.0", "1.10.2", true},
		{">=1.4.0 <2.0.0", "2.0.0", false},
		{">=1.4.0 <2.0.0", "1.3.99", false},
		{">=1.4", "1.4.0-beta", false},
		{">1.4.0-alpha", "1.4.0-beta", true},
		{"1.2.3 || >=3", "1.2.3", true},
		{"1.2.3 || >=3", "2.0", false},
		{"!=1.0.0", "v1.0.1", true},
		{">=1.0.0", "garbage", false},
	}
	for _, c := range cases {
		r, err := parseRange(c.rng)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.match(c.v); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.rng, c.v, got, c.want)
		}
	}
	for _, bad := range []string{"", ">=", "1.2.3.4", "1.x", "1.0.0 ||"} {
		if _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
}

func TestConfigDocumentSchemaCompiles(t *testing.T) {
	if len(DocumentSchema()) == 0 || documentSchema() == nil {
		t.Fatal("no document schema")
	}
}
