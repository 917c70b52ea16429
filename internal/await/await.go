// Package await is how Flotilla's tests wait: for a condition, with a
// deadline, never with a bare sleep.
package await

import (
	"testing"
	"time"
)

// Until polls cond every millisecond until it holds, failing the test
// if it does not within timeout: tests wait for conditions, never sleep.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
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
