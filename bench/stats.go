package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sampler keeps every latency sample until limit, then thins itself to
// every stride-th sample (stride doubling each time it fills), so memory
// stays bounded while the kept set remains an even sample of the run. The
// count and the maximum are exact.
type sampler struct {
	kept   []int64
	limit  int
	stride int64
	n      int64
	max    int64
}

func newSampler(limit, prealloc int) *sampler {
	limit = max(limit, 2)
	return &sampler{kept: make([]int64, 0, min(max(prealloc, 16), limit)), limit: limit, stride: 1}
}

func (s *sampler) add(v int64) {
	i := s.n
	s.n++
	if v > s.max {
		s.max = v
	}
	if i%s.stride != 0 {
		return
	}
	if len(s.kept) == s.limit {
		// Kept indices are multiples of stride; keeping every other one
		// leaves the multiples of 2*stride.
		j := 0
		for k := 0; k < len(s.kept); k += 2 {
			s.kept[j] = s.kept[k]
			j++
		}
		s.kept = s.kept[:j]
		s.stride *= 2
		if i%s.stride != 0 {
			return
		}
	}
	s.kept = append(s.kept, v)
}

// thinTo reduces the kept samples to every stride-th offered sample, so
// samplers that thinned by different amounts merge without bias.
func (s *sampler) thinTo(stride int64) []int64 {
	if stride <= s.stride {
		return s.kept
	}
	step := int(stride / s.stride)
	out := make([]int64, 0, len(s.kept)/step+1)
	for k := 0; k < len(s.kept); k += step {
		out = append(out, s.kept[k])
	}
	return out
}

// logHist is a coarse log-linear histogram of microseconds (eight
// sub-buckets per power of two, within 12.5%), cheap enough to keep per
// client for live progress lines. Final figures come from the samples.
type logHist [histBuckets]uint32

const histBuckets = 8 * 40

func histIndex(us int64) int {
	if us < 8 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 1 // >= 3
	i := (e-2)*8 + int(us>>(e-3))&7
	return min(i, histBuckets-1)
}

// histUpper is the largest value (µs) in bucket i.
func histUpper(i int) int64 {
	if i < 8 {
		return int64(i)
	}
	e, m := i/8+2, int64(i%8)
	return (9+m)<<(e-3) - 1
}

func (h *logHist) add(ns int64) { h[histIndex(ns/1000)]++ }

// histTotal accumulates logHists.
type histTotal struct {
	b [histBuckets]uint64
	n uint64
}

// drain moves h into t and clears h.
func (t *histTotal) drain(h *logHist) {
	for i, c := range h {
		if c != 0 {
			t.b[i] += uint64(c)
			t.n += uint64(c)
			h[i] = 0
		}
	}
}

// percentileMS is the upper bound of the bucket holding the nearest-rank
// percentile p, in milliseconds.
func (t *histTotal) percentileMS(p float64) float64 {
	if t.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(t.n)))
	rank = min(max(rank, 1), t.n)
	var cum uint64
	for i, c := range t.b {
		cum += c
		if cum >= rank {
			return float64(histUpper(i)) / 1000
		}
	}
	return float64(histUpper(histBuckets-1)) / 1000
}

// nsPercentilesMS sorts ns in place and returns nearest-rank percentiles in
// milliseconds.
func nsPercentilesMS(ns []int64, ps ...float64) []float64 {
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	out := make([]float64, len(ps))
	if len(ns) == 0 {
		return out
	}
	for k, p := range ps {
		rank := int(math.Ceil(p / 100 * float64(len(ns))))
		rank = min(max(rank, 1), len(ns))
		out[k] = round(float64(ns[rank-1]) / 1e6)
	}
	return out
}

// scrape is one read of a Prometheus text endpoint.
type scrape struct {
	at  time.Time
	mfs map[string]*dto.MetricFamily
}

func scrapeMetrics(ctx context.Context, client *http.Client, url string) (*scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Ask for the classic text format; the parser reads only that.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	at := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return &scrape{at: at, mfs: mfs}, nil
}

// value is the sum over all series of a counter, gauge or untyped metric.
func (s *scrape) value(name string) (float64, bool) {
	mf := s.mfs[name]
	if mf == nil {
		return 0, false
	}
	var v float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, true
}

func (s *scrape) histogram(name string) *dto.Histogram {
	mf := s.mfs[name]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return nil
	}
	return mf.GetMetric()[0].GetHistogram()
}

// counters returns every counter series whose name starts with prefix,
// keyed name{label="value",...}.
func (s *scrape) counters(prefix string) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range s.mfs {
		if !strings.HasPrefix(name, prefix) || mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[seriesKey(name, m)] = m.GetCounter().GetValue()
		}
	}
	return out
}

func seriesKey(name string, m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return name
	}
	parts := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// histDeltaPercentiles reads percentiles p (0-100] of the observations made
// between two scrapes of a cumulative histogram. Each figure is the upper
// bound of the bucket where the cumulative count reaches the rank (beyond
// the last finite bound, that bound); max is the upper bound of the highest
// bucket that gained observations. n is the number of observations; all
// zero when none were made.
func histDeltaPercentiles(before, after *dto.Histogram, ps ...float64) (vals []float64, maxV float64, n uint64) {
	vals = make([]float64, len(ps))
	if after == nil {
		return vals, 0, 0
	}
	prev := map[float64]uint64{}
	var prevCount uint64
	if before != nil {
		for _, b := range before.GetBucket() {
			prev[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		prevCount = before.GetSampleCount()
	}
	n = after.GetSampleCount() - prevCount
	if n == 0 {
		return vals, 0, 0
	}
	type bucket struct {
		upper float64
		cum   uint64
	}
	var bs []bucket
	for _, b := range after.GetBucket() {
		bs = append(bs, bucket{b.GetUpperBound(), b.GetCumulativeCount() - prev[b.GetUpperBound()]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	lastFinite := 0.0
	var below uint64
	for _, b := range bs {
		if math.IsInf(b.upper, 1) {
			continue
		}
		lastFinite = b.upper
		if b.cum > below {
			maxV = b.upper
		}
		below = b.cum
	}
	if n > below {
		maxV = lastFinite // observations above the last finite bound
	}
	for k, p := range ps {
		rank := uint64(math.Ceil(p / 100 * float64(n)))
		rank = min(max(rank, 1), n)
		vals[k] = lastFinite
		for _, b := range bs {
			if b.cum >= rank {
				vals[k] = b.upper
				break
			}
		}
		if math.IsInf(vals[k], 1) {
			vals[k] = lastFinite
		}
	}
	return vals, maxV, n
}

// progressLoop prints one line per second to w until done: the phase
// (warmup, measure, drain), and whatever line makes of the scenario's two
// counters (as rates since the previous line), the p99 of the phase so far
// and the error count. sample reads the counters and drains the clients'
// histograms into total.
func progressLoop(w io.Writer, start, winStart, winEnd time.Time, done <-chan struct{},
	sample func(total *histTotal) (a, b, errs int64),
	line func(elapsed float64, phase string, aRate, bRate, p99 float64, errs int64) string) {
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastA, lastB int64
	var total histTotal
	measuring := false
	last := time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			phase := "warmup"
			switch {
			case now.Before(start):
				continue
			case now.After(winEnd):
				phase = "drain"
			case !now.Before(winStart):
				phase = "measure"
				if !measuring {
					measuring, total = true, histTotal{}
				}
			}
			a, b, errs := sample(&total)
			dt := now.Sub(last).Seconds()
			fmt.Fprint(w, line(now.Sub(start).Seconds(), phase, float64(a-lastA)/dt, float64(b-lastB)/dt,
				total.percentileMS(99), errs))
			lastA, lastB, last = a, b, now
		}
	}
}

// writeProblems prints a scenario's errors by kind, with samples, and why
// server metrics are missing, if they are.
func writeProblems(w io.Writer, errs int64, kinds map[string]int64, samples []string, metricsErr string) {
	if errs > 0 {
		list := make([]string, 0, len(kinds))
		for k, v := range kinds {
			if v > 0 {
				list = append(list, fmt.Sprintf("%s %d", k, v))
			}
		}
		sort.Strings(list)
		fmt.Fprintf(w, "errors: %s\n", strings.Join(list, ", "))
		for _, s := range samples {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if metricsErr != "" {
		fmt.Fprintf(w, "server metrics unavailable: %s\n", metricsErr)
	}
}
