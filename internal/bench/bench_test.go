package bench

import (
	"context"
	"os"
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
			return r.ElectSeconds > 0 && r.HeartbeatsPerSec > 0 && r.Proposals == 0
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
