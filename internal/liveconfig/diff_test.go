package liveconfig

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDiffValuesAndReassignment(t *testing.T) {
	a := mustBuild(t, Files{"g.yaml": []byte(`
values: {gold: 100, old: 1, shop: {discount: 0}}
experiments:
  - id: split
    variants: [{name: treatment, weight: 10, values: {g.gold: 200}}, {name: control, weight: 90}]
  - id: gone
    variants: [{name: a, weight: 100}]
`)})
	b := mustBuild(t, Files{"g.yaml": []byte(`
values: {gold: 120, new: 2, shop: {discount: 0}}
experiments:
  - id: split
    variants: [{name: treatment, weight: 20, values: {g.gold: 200}}, {name: control, weight: 80}]
  - id: added
    layer: L
    variants: [{name: a, weight: 100}]
`)})
	var lines []string
	for _, c := range Diff(a, b, time.Now()) {
		lines = append(lines, c.String())
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"~ value g.gold: 100 -> 120",
		"+ value g.new: 2",
		"- value g.old: 1",
		"+ experiment added: a 100%; layer L [0%, 100%); rollout now 100%",
		"- experiment gone",
		"~ experiment split: variants treatment 10%, control 90% -> treatment 20%, control 80%; 10% of players change variant",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "g.shop") {
		t.Errorf("an unchanged value is listed:\n%s", got)
	}
	if d := Diff(a, a, time.Now()); len(d) != 0 {
		t.Fatalf("a snapshot differs from itself: %v", d)
	}
}
