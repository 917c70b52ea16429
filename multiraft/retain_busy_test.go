// Regression tests from a third review of the retained log: each test's
// comment tells its scenario as it failed before the fix.

package multiraft_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestRemoteBusySnapshotBacksOff: reportSnapshots (snapshot.go:186-189)
// takes a peer's ErrTooManySnapshot (all its receive slots taken) as a
// deferral with no back-off. But the receiver refuses only after the
// sender has opened a view and Measured it (transport/core.go:458: a full
// read of the retained log and state), and raft asks again at the next
// heartbeat response: while one large snapshot holds the receiver's slot
// (minutes, for a partition), every other group that needs a snapshot on
// that node has its leader read its whole partition once per heartbeat,
// the cost the back-off of 5684f2a was for (TestRefusedSnapshotBacksOff:
// the same refusal-before-data, for lack of staging room).
func TestRemoteBusySnapshotBacksOff(t *testing.T) {
	c, sm := keepClusterByGroup(t, 4, func(cfg *multiraft.Config) { cfg.SnapshotEntries, cfg.LogTailEntries = 1000, 1 },
		func(tc *transport.Config) {
			tc.MaxSnapshotRecvs = 1
			tc.SnapshotChunkBytes, tc.SnapshotRateBytes = 4<<10, 8<<10 // group 1's 120 KiB take about 15 s
		})
	const slow, other = 1, 2
	c.CreateGroup(slow, 1, 2, 3)
	c.CreateGroup(other, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{slow, other})
	pad := strings.Repeat("x", 4<<10)
	for i := range 30 {
		propose(t, c, slow, fmt.Sprintf("a%d%s", i, pad))
	}
	propose(t, c, slow, "keep:10")
	for i := range 10 {
		propose(t, c, other, fmt.Sprintf("b%d", i))
	}
	propose(t, c, other, "keep:10")

	addOn(t, c, slow, 4)
	staging := func() float64 { return c.Metric(4, "flotilla_host_snapshot_staging_bytes") }
	c.WaitFor("node 4 to receive group 1's snapshot", 30*time.Second, func() bool { return staging() > 0 })

	leader := c.Leader(other)
	failed := func() float64 {
		return c.MetricLabel(leader, "flotilla_transport_snapshots_failed_total", "peer", "4")
	}
	addOn(t, c, other, 4)
	c.WaitFor("node 4 to refuse group 2's snapshot (its slot is taken)", 30*time.Second, func() bool { return failed() >= 1 })
	before := failed()
	const ticks = 10 // one election timeout
	for range ticks {
		c.Step()
	}
	n := failed() - before
	if staging() == 0 || sm(4, slow).last() != 0 {
		// Group 1's snapshot takes about 15 s at its rate; ten steps take
		// milliseconds. Without it the premise is gone.
		t.Fatal("group 1's snapshot no longer held node 4's slot: the premise of the test did not hold")
	}
	if n > 2 {
		t.Fatalf("in one election timeout the leader of group 2 measured (read whole) and offered a snapshot node 4 refused as busy %v times", n)
	}
}

// TestHeldBackTruncationNotRequeuedEveryPass: while a snapshot send holds
// a LogRetainer's truncation back (g.sending), keptFrom stays behind and
// truncateKept runs again at every pass of the group, not only at every
// apply: reportSnapshots (snapshot.go:217) calls it with no report too,
// at every tick and every message. Each call queues a Truncate to the
// same index, which the log writer finds done already (log_writer.go:287):
// an idle group keeps its host's log writer busy with empty items for as
// long as the send lasts (minutes, for a partition), and sending keeps the
// group from quiescing.
func TestHeldBackTruncationNotRequeuedEveryPass(t *testing.T) {
	c, sm := keepClusterByGroup(t, 4, func(cfg *multiraft.Config) { cfg.SnapshotEntries, cfg.LogTailEntries = 1000, 1 },
		func(tc *transport.Config) {
			tc.SnapshotChunkBytes, tc.SnapshotRateBytes = 4<<10, 8<<10 // 120 KiB: about 15 s
		})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	pad := strings.Repeat("x", 4<<10)
	for i := range 30 {
		propose(t, c, g, fmt.Sprintf("a%d%s", i, pad))
	}
	propose(t, c, g, "keep:10")
	leader := c.Leader(g)
	addOn(t, c, g, 4)
	staging := func() float64 { return c.Metric(4, "flotilla_host_snapshot_staging_bytes") }
	c.WaitFor("node 4 to receive the snapshot", 30*time.Second, func() bool { return staging() > 0 })
	for i := range 5 {
		propose(t, c, g, fmt.Sprintf("c%d", i))
	}
	propose(t, c, g, fmt.Sprintf("keep:%d", sm(leader, g).last())) // held back by the send
	items := func() float64 { return c.Metric(leader, "flotilla_store_log_items_total") }
	c.Step()
	before := items()
	const ticks = 10
	for range ticks {
		c.Step()
	}
	n := items() - before
	if staging() == 0 {
		// The snapshot takes about 15 s at its rate; ten steps take
		// milliseconds.
		t.Fatal("the snapshot arrived before the ticks ended: the premise of the test did not hold")
	}
	if n > 2 {
		t.Fatalf("an idle group whose truncation a snapshot send holds back had its leader's log writer take %v items in %d ticks", n, ticks)
	}
}
