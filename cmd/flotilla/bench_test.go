package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/internal/bench"
)

// TestBenchProcs: `flotilla bench --procs` runs a workload on three node
// processes of the binary, reports their figures (scraped from their
// /metrics and /proc), and leaves neither processes nor data behind.
// (What the figures are is for the tool, not for a test.)
func TestBenchProcs(t *testing.T) {
	bin := buildBinary(t)
	dir, out := t.TempDir(), filepath.Join(t.TempDir(), "r.json")
	run(t, bin, "bench", "--procs", "--workload", "failover-1k", "--groups", "6", "--proposers", "12",
		"--warmup", "500ms", "--duration", "6s", "--dir", dir, "--json", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var reports []*bench.Report
	if err := json.Unmarshal(b, &reports); err != nil || len(reports) != 1 {
		t.Fatalf("JSON: %v, %d reports", err, len(reports))
	}
	r := reports[0]
	if r.Proposals == 0 || r.FsyncsPerSecHost == 0 || r.FramesPerSec == 0 || r.CPUCores == 0 || r.PeakRSS == 0 || r.FailoverTimeouts <= 0 {
		t.Fatalf("figures missing: %+v", r)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	// No node process of the run outlives it (their --data-dir is under dir).
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if cmdline, err := os.ReadFile(p); err == nil && strings.Contains(string(cmdline), dir) {
			t.Fatalf("a node process outlived the bench: %s %q", p, cmdline)
		}
	}
}
