// Regression tests from a review: each test's comment tells its scenario
// as it failed before the fix.

package integration

import (
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestRefusedSnapshotBacksOff: a receiver without staging room
// refuses before data moves, but every retry makes the leader open a view
// and Measure the snapshot again, a full read of the state machine's data
// and retained log (for a partition of many GiB, seconds of disk reads):
// raft asks again at the next heartbeat response, with no back-off, so a
// follower that cannot take a snapshot keeps its leader reading the whole
// partition over and over.
func TestRefusedSnapshotBacksOff(t *testing.T) {
	c := snapshotCluster(t, true, 40, func(cfg *multiraft.Config) {
		cfg.SnapshotStagingBytes = 16 << 10 // less than the snapshot's 40 KiB
	})
	addOn4(t, c)
	refused := func() float64 { return c.MetricLabel(4, "flotilla_host_snapshots_refused_total", "reason", "no_room") }
	c.WaitFor("node 4 refusing for lack of room", 60e9, func() bool { return refused() >= 1 })
	before := refused()
	const ticks = 10 // one election timeout
	for range ticks {
		c.Step()
	}
	if n := refused() - before; n > 2 {
		t.Fatalf("in one election timeout the leader measured (read whole) and offered the same refused snapshot %v times", n)
	}
}
