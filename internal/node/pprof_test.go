package node

import (
	"net/http"
	"strings"
	"testing"
)

// TestPprof: --pprof serves Go's profiles beside /metrics, and only then.
func TestPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		n, _ := startOne(t, func(cfg *Config) { cfg.MetricsAddr, cfg.Pprof = "127.0.0.1:0", on })
		base := "http://" + n.MetricsAddr()
		profiles := http.StatusNotFound
		if on {
			profiles = http.StatusOK
		}
		for path, want := range map[string]int{"/metrics": http.StatusOK, "/debug/pprof/goroutine?debug=1": profiles} {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("pprof %v: GET %s: %s, want %d", on, path, resp.Status, want)
			}
		}
	}
}

// TestPprofNeedsLoopback: profiles are refused on a metrics address
// other than loopback (unless Insecure), and without one.
func TestPprofNeedsLoopback(t *testing.T) {
	for _, addr := range []string{"", "0.0.0.0:0"} {
		_, err := LocalCluster(1, t.TempDir(), func(cfg *Config) { cfg.MetricsAddr, cfg.Pprof = addr, true })
		if err == nil || !strings.Contains(err.Error(), "profiles") {
			t.Fatalf("Pprof on metrics address %q: %v, want a refusal", addr, err)
		}
	}
}
