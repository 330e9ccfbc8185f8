package bench

import "testing"

func TestPercentileNearestRank(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}, {0, 1}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
	if Percentile([]float64{7}, 99) != 7 {
		t.Error("single")
	}
}

func TestSummarise(t *testing.T) {
	r := &ColdstartResult{Samples: []float64{30, 10, 20}}
	r.summarise()
	if r.MinMS != 10 || r.MaxMS != 30 || r.P50MS != 20 || r.P99MS != 30 || r.MeanMS != 20 {
		t.Fatalf("%+v", r)
	}
	if r.Samples[0] != 30 {
		t.Fatal("summarise reordered the samples")
	}
}
