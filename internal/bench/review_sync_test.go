package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flotilla-io/flotilla/metrics"
)

// TestReviewSyncQuantileBeyondBounds (review, issue 16): the sync
// histogram's last finite bound is 50 us x 2^15 = 1.6384 s. When more than
// 1% of a window's syncs take longer (a slow or stalled disk: the case the
// figure is for):
//   - with --procs, node metrics are scraped as text, and expfmt's parser
//     keeps the le="+Inf" bucket, so quantile(0.99) is +Inf: log_sync_p99_ms
//     is +Inf, the table prints "+Inf", and json.MarshalIndent of the
//     reports fails, so --json writes nothing for any workload of the run;
//   - in process (Registry.Gather, +Inf implied), the same window reports
//     1638.4 ms, an "upper bound" below every sample.
func TestReviewSyncQuantileBeyondBounds(t *testing.T) {
	m := metrics.NewStore()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	for range 100 {
		m.SyncDuration.Observe(3) // 3 s each
	}

	// The --procs path: procCluster.scrape + histogram.
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
	var procs buckets
	procs.add(parsed[syncHistogram].GetMetric())
	var procWindow buckets
	procWindow.merge(procs.since(buckets{}))

	// The in-process path: localCluster.histogram.
	var local buckets
	for _, f := range families {
		if f.GetName() == syncHistogram {
			local.add(f.GetMetric())
		}
	}
	var localWindow buckets
	localWindow.merge(local.since(buckets{}))

	r := &Report{Workload: "latency-48"}
	r.SyncP50Ms, r.SyncP99Ms = procWindow.quantile(0.5)*1e3, procWindow.quantile(0.99)*1e3
	localP99 := localWindow.quantile(0.99) * 1e3
	t.Logf("every sync took 3000 ms: --procs p99 = %v ms, in process p99 = %v ms", r.SyncP99Ms, localP99)

	if _, err := json.MarshalIndent([]*Report{r}, "", "  "); err != nil {
		t.Errorf("--procs: the report no longer encodes (bench --json writes nothing): %v", err)
	}
	if math.IsInf(r.SyncP99Ms, 0) || r.SyncP99Ms != localP99 {
		t.Errorf("the two cluster kinds disagree on the same histogram: --procs %v ms, in process %v ms", r.SyncP99Ms, localP99)
	}
	if localP99 < 3000 {
		t.Errorf("in process: p99 %v ms is reported as an upper bound, yet every sync took 3000 ms", localP99)
	}
}
