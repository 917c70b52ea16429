package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// changeWithTime runs ChangeMembership on a node while moving the clock.
func changeWithTime(t *testing.T, c *Cluster, node multiraft.NodeID, g multiraft.GroupID, changes ...multiraft.Change) map[multiraft.ReplicaID]multiraft.NodeID {
	t.Helper()
	var replicas map[multiraft.ReplicaID]multiraft.NodeID
	err := c.Do(fmt.Sprintf("membership change %v", changes), func(ctx context.Context) (err error) {
		replicas, err = c.Host(node).ChangeMembership(ctx, g, changes...)
		return err
	})
	if err != nil {
		t.Fatalf("membership change %v: %v", changes, err)
	}
	return replicas
}

func replicaOn(replicas map[multiraft.ReplicaID]multiraft.NodeID, node multiraft.NodeID) multiraft.ReplicaID {
	for r, n := range replicas {
		if n == node {
			return r
		}
	}
	return 0
}

func waitApplied(t *testing.T, c *Cluster, g multiraft.GroupID, nodes []multiraft.NodeID, n int) {
	t.Helper()
	c.WaitFor(fmt.Sprintf("nodes %v to apply %d commands of group %d", nodes, n, g), time.Minute, func() bool {
		for _, node := range nodes {
			sm := c.SM(node, g)
			if sm == nil || sm.Len() != n {
				return false
			}
		}
		return true
	})
}

// TestMembership: a fourth replica joins as a learner (caught up by a
// snapshot: the leader's log was truncated after a durable snapshot), is
// promoted, and serves; a replica is removed (its host drops the group and
// keeps a tombstone) and later comes back on the same node as a new
// replica with a higher ID, catches up, and leads.
func TestMembership(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(smKind(disk), func(t *testing.T) { testMembership(t, disk) })
	}
}

func testMembership(t *testing.T, disk bool) {
	c := NewCluster(t, ClusterConfig{Nodes: 4, OnDisk: disk, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 4 // the log is truncated before the new replicas join
		cfg.LogTailEntries = 1
	}})
	const g = 3
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := 0; i < 5; i++ {
		if _, err := proposeWithTime(c, c.Leader(g), g, fmt.Appendf(nil, "before-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	replicas := changeWithTime(t, c, c.Leader(g), g, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	r4 := replicaOn(replicas, 4)
	if r4 != 4 {
		t.Fatalf("the new replica got ID %d, want 4 (the next after the founding 1..3): %v", r4, replicas)
	}
	if err := c.Host(4).JoinGroup(g, r4); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, []NodeID{4}, 5)
	if n := c.Metric(c.Leader(g), "flotilla_store_log_truncations_total"); n == 0 {
		t.Fatal("the leader never truncated its log")
	}
	// The sender counts the send once the receiver's acceptance is back,
	// which may be after the receiver applied it.
	c.WaitFor("the leader to count a snapshot sent", 10*time.Second, func() bool {
		return c.Sum("flotilla_transport_snapshots_sent_total") > 0
	})
	changeWithTime(t, c, c.Leader(g), g, multiraft.Change{Type: multiraft.AddVoter, Node: 4})
	if _, err := proposeWithTime(c, c.Leader(g), g, []byte("with four")); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, []NodeID{1, 2, 3, 4}, 6)

	// Remove a follower's replica.
	leader := c.Leader(g)
	victim := NodeID(1)
	for victim == leader {
		victim++
	}
	replicas = changeWithTime(t, c, leader, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: victim})
	if replicaOn(replicas, victim) != 0 {
		t.Fatalf("node %d still in %v", victim, replicas)
	}
	c.WaitFor("the removed replica to be dropped by its host", time.Minute, func() bool {
		return !slices.Contains(c.Host(victim).Groups(), g)
	})
	// Its old replica ID can never come back there.
	// Founding replicas 1..3 are on nodes 1..3.
	oldID := multiraft.ReplicaID(victim)
	if err := c.Host(victim).JoinGroup(g, oldID); err == nil {
		t.Fatalf("node %d took back its removed replica %d", victim, oldID)
	}

	// And back as a new replica.
	leader = c.Leader(g)
	replicas = changeWithTime(t, c, leader, g, multiraft.Change{Type: multiraft.AddLearner, Node: victim})
	again := replicaOn(replicas, victim)
	if again <= r4 {
		t.Fatalf("re-added replica got ID %d, want above %d", again, r4)
	}
	if err := c.Host(victim).JoinGroup(g, again); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, []NodeID{victim}, 6)
	changeWithTime(t, c, leader, g, multiraft.Change{Type: multiraft.AddVoter, Node: victim})
	transferWithTime(t, c, leader, g, victim)
	if _, err := proposeWithTime(c, victim, g, []byte("led by the re-added replica")); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, []NodeID{1, 2, 3, 4}, 7)
}

func transferWithTime(t *testing.T, c *Cluster, from multiraft.NodeID, g multiraft.GroupID, to multiraft.NodeID) {
	t.Helper()
	if err := c.Do("a leadership transfer", func(ctx context.Context) error { return c.Host(from).TransferLeadership(ctx, g, to) }); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the new leader to serve", time.Minute, func() bool { return c.Leader(g) == to })
}

// TestRemoveGroup: removing a group from every host drops it everywhere;
// proposals then find no group, and its ID gets no new life from stray
// messages.
func TestRemoveGroup(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	c.CreateGroup(1, 1, 2, 3)
	c.CreateGroup(2, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{1, 2})
	leader := c.Leader(1)
	if _, err := proposeWithTime(c, leader, 1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if err := c.Host(n).RemoveGroup(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(c.Host(n).Groups(), 1) {
			t.Fatalf("node %d still hosts group 1", n)
		}
	}
	if _, err := c.Host(leader).Propose(context.Background(), 1, []byte("y")); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("proposal to a removed group: %v", err)
	}
	// The other group is unaffected.
	if _, err := proposeWithTime(c, c.Leader(2), 2, []byte("z")); err != nil {
		t.Fatal(err)
	}
}

// TestFailedSnapshotIsReported: snapshot sends that fail (the network
// drops them) are reported to raft as failures, so the follower does not
// stay in snapshot state forever: once the network lets snapshots through,
// it catches up (invariant 3).
func TestFailedSnapshotIsReported(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 4
		cfg.LogTailEntries = 1
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := 0; i < 6; i++ {
		if _, err := proposeWithTime(c, c.Leader(g), g, fmt.Appendf(nil, "x%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	heal := c.Net.AddFilter(transport.DropType(pb.MsgSnap))
	replicas := changeWithTime(t, c, c.Leader(g), g, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(g, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	failed := func() float64 {
		var n float64
		for _, node := range c.Nodes() {
			n += c.Metric(node, "flotilla_transport_snapshots_failed_total")
		}
		return n
	}
	c.WaitFor("two failed snapshot sends", time.Minute, func() bool { return failed() >= 2 })
	if c.SM(4, g).Len() != 0 {
		t.Fatal("the learner caught up although every snapshot was dropped")
	}
	heal()
	waitApplied(t, c, g, []NodeID{4}, 6)
}

// TestRemovedWhileCutOffIsCollected: a replica removed while it was cut
// off never applies its removal; once it is heard from again, a member
// tells it, and its host removes it (and keeps a tombstone).
func TestRemovedWhileCutOffIsCollected(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	const g = 5
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	victim := leader%3 + 1
	heal := c.Isolate(victim)
	changeWithTime(t, c, leader, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: victim})
	if !slices.Contains(c.Host(victim).Groups(), g) {
		t.Fatal("the cut-off replica learned of its removal through a partition")
	}
	heal()
	c.WaitFor("the removed replica to be collected", time.Minute, func() bool {
		return !slices.Contains(c.Host(victim).Groups(), g)
	})
	if _, err := proposeWithTime(c, c.Leader(g), g, []byte("still fine")); err != nil {
		t.Fatal(err)
	}
}

// TestJointMembershipChange: several changes at once go through joint
// consensus, which is left on its own; the group ends with exactly the
// configuration asked for and keeps serving.
func TestJointMembershipChange(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 4
		cfg.LogTailEntries = 1
	}})
	const g = 9
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	out := leader%3 + 1 // a follower among 1..3
	replicas := changeWithTime(t, c, leader, g, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(g, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	// Promote 4 and remove another in one joint change.
	replicas = changeWithTime(t, c, c.Leader(g), g,
		multiraft.Change{Type: multiraft.AddVoter, Node: 4},
		multiraft.Change{Type: multiraft.RemoveReplica, Node: out})
	// The call returns once the joint configuration is entered: both the
	// incoming and the outgoing replica are members for now.
	if replicaOn(replicas, out) == 0 || replicaOn(replicas, 4) == 0 {
		t.Fatalf("in the joint configuration: %v", replicas)
	}
	c.WaitFor("the joint configuration to be left", time.Minute, func() bool {
		l := c.Leader(g)
		if l == 0 {
			return false
		}
		st, err := c.Host(l).Status(g)
		return err == nil && len(st.Progress) == 3 && len(st.Replicas) == 3 && replicaOn(st.Replicas, out) == 0
	})
	c.WaitFor("the removed replica to go", time.Minute, func() bool { return !slices.Contains(c.Host(out).Groups(), g) })
	if _, err := proposeWithTime(c, c.Leader(g), g, []byte("after joint")); err != nil {
		t.Fatal(err)
	}
}
