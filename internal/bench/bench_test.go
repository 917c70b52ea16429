package bench

import (
	"context"
	"os"
	"runtime/debug"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWorkloadsRun: every kind of workload runs end to end at a tiny
// scale, reports the figures it is meant to, and leaves no data behind.
// (What the figures are is for `flotilla bench`, not for a test.)
func TestWorkloadsRun(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg   Config
		check func(*Report) bool
	}{
		{Config{Workload: "write-48", Groups: 6, Proposers: 12}, func(r *Report) bool {
			return r.Proposals > 0 && r.P99Ms > 0 && r.FsyncsPerSecHost > 0 && r.FramesPerSec > 0 && r.CPUCores > 0
		}},
		{Config{Workload: "idle-10k", Groups: 30}, func(r *Report) bool {
			return r.ElectSeconds > 0 && r.WireRecordsPerSec > 0 && r.Proposals == 0
		}},
		{Config{Workload: "failover-idle-10k", Groups: 30}, func(r *Report) bool {
			return r.ElectSeconds > 0 && r.FailoverTimeouts > 0
		}},
		{Config{Workload: "restart-10k", Groups: 10, Entries: 5, Proposers: 10}, func(r *Report) bool {
			return r.RestartSeconds > 0 && r.Proposals == 50
		}},
		{Config{Workload: "failover-1k", Groups: 12, Proposers: 24, Duration: 8 * time.Second}, func(r *Report) bool {
			return r.Proposals > 0 && r.FailoverTimeouts > 0
		}},
	} {
		t.Run(tc.cfg.Workload, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Dir = dir
			cfg.Warmup = 200 * time.Millisecond
			if cfg.Duration == 0 {
				cfg.Duration = time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(r) || r.PeakRSS == 0 {
				t.Fatalf("report lacks figures: %+v", r)
			}
		})
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("runs left %d entries behind", len(left))
	}
	if _, err := Run(context.Background(), Config{Workload: "nope"}); err == nil {
		t.Fatal("an unknown workload ran")
	}
}

// TestMedian: every figure of a median report is the median of that
// figure over the runs, error counts included; the runs stay attached.
func TestMedian(t *testing.T) {
	runs := []*Report{
		{Workload: "write-48", Groups: 48, ProposalsPerSec: 30, P99Ms: 9, Proposals: 7, PeakRSS: 300, Errors: map[string]uint64{"busy": 4}},
		{Workload: "write-48", Groups: 48, ProposalsPerSec: 10, P99Ms: 1, Proposals: 9, PeakRSS: 100, Errors: map[string]uint64{}},
		{Workload: "write-48", Groups: 48, ProposalsPerSec: 20, P99Ms: 5, Proposals: 8, PeakRSS: 200, Errors: map[string]uint64{"busy": 2, "other": 1}},
	}
	m := Median(runs)
	if m.ProposalsPerSec != 20 || m.P99Ms != 5 || m.Proposals != 8 || m.PeakRSS != 200 || m.Groups != 48 {
		t.Fatalf("medians: %+v", m)
	}
	if m.Errors["busy"] != 2 || len(m.Errors) != 1 {
		t.Fatalf("error medians: %v (other was in one run of three: median 0)", m.Errors)
	}
	if m.Runs != 3 || len(m.Each) != 3 || m.Workload != "write-48" {
		t.Fatalf("runs %d, each %d, workload %q", m.Runs, len(m.Each), m.Workload)
	}
	if even := Median(runs[:2]); even.ProposalsPerSec != 20 {
		t.Fatalf("median of two: %v, want their mean", even.ProposalsPerSec)
	}
}

// TestPeakRSSReset: a run's peak RSS is its own: after a reset the peak
// is back near the current RSS, below what a large allocation raised it to.
func TestPeakRSSReset(t *testing.T) {
	big := make([]byte, 256<<20)
	for i := range big {
		big[i] = 1
	}
	high := peakRSS()
	big = nil
	debug.FreeOSMemory()
	if !resetPeakRSS() {
		t.Fatal("cannot reset the peak RSS (no /proc/self/clear_refs): bench figures would carry earlier runs' peaks")
	}
	if after := peakRSS(); after >= high || after < currentRSS()/2 {
		t.Fatalf("peak %d MiB before the reset, %d MiB after, current %d MiB", high>>20, after>>20, currentRSS()>>20)
	}
	_ = big
}
