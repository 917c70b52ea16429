package bench

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flotilla-io/flotilla/metrics"
)

// TestSyncQuantileBeyondBounds (from a review): a scrape lists the +Inf
// bucket and a Gather implies it; both must give the same window
// quantiles, within the histogram's range as the bucket's upper bound, and
// beyond it as -1 (the report must still encode as JSON: it has no
// infinity).
func TestSyncQuantileBeyondBounds(t *testing.T) {
	for _, tc := range []struct {
		seconds float64
		check   func(p99 float64) bool
	}{
		{3, func(p99 float64) bool { return p99 >= 3000 && p99 < 26000 }},
		{100, func(p99 float64) bool { return p99 == -1 }},
	} {
		procs, local := syncWindows(t, tc.seconds)
		r := &Report{Workload: "latency-48"}
		r.SyncP50Ms, r.SyncP99Ms = millis(procs.quantile(0.5)), millis(procs.quantile(0.99))
		localP99 := millis(local.quantile(0.99))
		if _, err := json.MarshalIndent([]*Report{r}, "", "  "); err != nil {
			t.Errorf("syncs of %v s: the report does not encode: %v", tc.seconds, err)
		}
		if r.SyncP99Ms != localP99 || !tc.check(r.SyncP99Ms) {
			t.Errorf("syncs of %v s: p99 %v ms scraped, %v ms gathered", tc.seconds, r.SyncP99Ms, localP99)
		}
	}
}

// syncWindows observes 100 syncs of the given duration and reads them
// back as the two kinds of cluster do: scraped as text, and gathered.
func syncWindows(t *testing.T, seconds float64) (procs, local buckets) {
	t.Helper()
	m := metrics.NewStore()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	for range 100 {
		m.SyncDuration.Observe(seconds)
	}
	var text bytes.Buffer
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(&text)
	if err != nil {
		t.Fatal(err)
	}
	var scraped, gathered buckets
	scraped.add(parsed[syncHistogram].GetMetric())
	procs.merge(scraped.since(buckets{}))
	for _, f := range families {
		if f.GetName() == syncHistogram {
			gathered.add(f.GetMetric())
		}
	}
	local.merge(gathered.since(buckets{}))
	return procs, local
}
