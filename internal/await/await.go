// Package await is how Flotilla's tests wait: for a condition, with a
// deadline, never with a bare sleep.
package await

import (
	"time"
)

// T is what Until needs of a test (testing.TB has it).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Until polls cond every millisecond until it holds, failing the test
// if it does not within timeout: tests wait for conditions, never sleep.
func Until(t T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
