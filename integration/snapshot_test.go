package integration

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// snapshotCluster is four nodes whose group 1 on nodes 1-3 has truncated
// its log past n commands of 1 KiB, so that a replica added on node 4
// needs a snapshot of about n KiB.
func snapshotCluster(t *testing.T, disk bool, n int, configure func(*multiraft.Config)) *Cluster {
	c := NewCluster(t, ClusterConfig{Nodes: 4, OnDisk: disk, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 4
		cfg.LogTailEntries = 1
		if configure != nil {
			configure(cfg)
		}
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := range n {
		data := append(fmt.Appendf(nil, "x%d-", i), bytes.Repeat([]byte{'k'}, 1024)...)
		if _, err := proposeWithTime(c, c.Leader(g), g, data); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// addOn4 adds a learner of group 1 on node 4.
func addOn4(t *testing.T, c *Cluster) {
	t.Helper()
	replicas := changeWithTime(t, c, c.Leader(1), 1, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(1, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotCutHalfway: a snapshot stream that breaks halfway leaves
// nothing staged on the receiver (its table is removed, its reservation
// returned), and the retry installs: for both kinds of state machine.
func TestSnapshotCutHalfway(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(smKind(disk), func(t *testing.T) {
			c := snapshotCluster(t, disk, 40, nil)
			leader := c.Leader(1)
			// Cut every snapshot from the leader to node 4 at 20 KiB,
			// about half of it.
			heal := c.Net.AddFilter(transport.CutSnapshots(uint64(leader), 4, 20<<10))
			addOn4(t, c)
			c.WaitFor("a cut snapshot on node 4", time.Minute, func() bool {
				return c.MetricLabel(4, "flotilla_host_snapshots_refused_total", "reason", "failed") >= 1
			})
			if c.SM(4, 1).Len() != 0 {
				t.Fatal("node 4 applied a cut snapshot")
			}
			heal()
			waitApplied(t, c, 1, []NodeID{4}, 40)
			c.WaitFor("no staged snapshot left on node 4", 10*time.Second, func() bool {
				return len(c.StagedSnapshots(4)) == 0 && c.Metric(4, "flotilla_host_snapshot_staging_bytes") == 0
			})
		})
	}
}

// TestSnapshotNoRoom: a receiver whose staging budget cannot take the
// announced size refuses before any data moves: the sender reads and
// sends nothing, the receiver receives nothing; the group goes on.
func TestSnapshotNoRoom(t *testing.T) {
	c := snapshotCluster(t, true, 40, func(cfg *multiraft.Config) {
		cfg.SnapshotStagingBytes = 16 << 10 // less than the snapshot's 40 KiB
	})
	addOn4(t, c)
	c.WaitFor("node 4 refusing for lack of room", time.Minute, func() bool {
		return c.MetricLabel(4, "flotilla_host_snapshots_refused_total", "reason", "no_room") >= 2
	})
	if got := c.Metric(4, "flotilla_transport_snapshot_bytes_received_total"); got != 0 {
		t.Fatalf("node 4 received %v bytes of snapshots it had no room for", got)
	}
	if got := c.Sum("flotilla_transport_snapshot_bytes_sent_total"); got != 0 {
		t.Fatalf("%v bytes of snapshots sent to a receiver without room", got)
	}
	if n := len(c.StagedSnapshots(4)); n != 0 {
		t.Fatalf("%d staged files on a receiver that refused", n)
	}
	if _, err := proposeWithTime(c, c.Leader(1), 1, []byte("still fine")); err != nil {
		t.Fatal(err)
	}
}
