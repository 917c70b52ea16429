package multiraft_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

func replicaOnNode(replicas map[multiraft.ReplicaID]multiraft.NodeID, node multiraft.NodeID) multiraft.ReplicaID {
	var r multiraft.ReplicaID
	for id, n := range replicas {
		if n == node {
			r = max(r, id)
		}
	}
	return r
}

// TestSeededJoinerHearsLaterLeader: the reference node's
// ChangeReplicas flow (AddLearner, JoinGroupOn from the leader, AddVoter)
// for two nodes; the first joiner's snapshot is late, and by then the
// leader is the second joiner, which its seed does not name.
func TestSeededJoinerHearsLaterLeader(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 5})
	const g = multiraft.GroupID(7)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "one")
	// Node 4 hears nothing of the group for now: its snapshot is late.
	heal := c.Net.AddFilter(func(from, to transport.NodeID, e transport.Envelope) transport.Verdict {
		return transport.Verdict{Drop: to == 4 && e.GroupID == uint64(g)}
	})
	join := func(node multiraft.NodeID, voter bool) {
		r := replicaOnNode(change(t, c, g, multiraft.Change{Type: multiraft.AddLearner, Node: node}), node)
		if err := c.Do("join", func(ctx context.Context) error { return c.Host(c.Leader(g)).JoinGroupOn(ctx, node, g, r) }); err != nil {
			t.Fatal(err)
		}
		if voter {
			change(t, c, g, multiraft.Change{Type: multiraft.AddVoter, Node: node})
		}
	}
	join(4, false)
	join(5, true)
	waitApplied(t, c, g, 5, 1)
	if err := c.Do("transfer", func(ctx context.Context) error { return c.Host(c.Leader(g)).TransferLeadership(ctx, g, 5) }); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("node 5 leads", time.Minute, func() bool { return c.Leader(g) == 5 })
	heal()
	propose(t, c, g, "two")
	defer func() { t.Logf("node 4 sender_unverified=%v", dropped(c, 4, "sender_unverified")) }()
	waitApplied(t, c, g, 4, 2)
}

// TestMemberRestartsBeforeApplyingAdd: a follower appends the change
// that adds a voter but restarts before it learns the change committed;
// meanwhile the new voter leads. The follower's learned map is gone, the
// change is unapplied: it refuses its leader.
func TestMemberRestartsBeforeApplyingAdd(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4})
	const g = multiraft.GroupID(8)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	if err := c.Do("transfer", func(ctx context.Context) error { return c.Host(c.Leader(g)).TransferLeadership(ctx, g, 1) }); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("node 1 leads", time.Minute, func() bool { return c.Leader(g) == 1 })
	propose(t, c, g, "one")
	waitApplied(t, c, g, 2, 1)
	// From now on node 2 gets only the append that carries the next
	// membership change, with a commit short of it.
	var armed atomic.Bool
	armed.Store(true)
	heal := c.Net.AddFilter(func(from, to transport.NodeID, e transport.Envelope) transport.Verdict {
		if to != 2 || e.GroupID != uint64(g) || !armed.Load() {
			return transport.Deliver
		}
		m := e.Message
		if m.GetType() == pb.MsgApp {
			for _, en := range m.GetEntries() {
				if en.GetType() == pb.EntryConfChangeV2 && en.GetIndex() > m.GetCommit() {
					return transport.Deliver
				}
			}
		}
		return transport.Verdict{Drop: true}
	})
	r4 := replicaOnNode(change(t, c, g, multiraft.Change{Type: multiraft.AddVoter, Node: 4}), 4)
	st, _ := c.Host(1).Status(g)
	if err := c.Host(4).JoinGroup(g, r4); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, 4, 1)
	r2 := multiraft.ReplicaID(replicaOf(t, c, g, 2))
	c.WaitFor("node 2 holds the change", time.Minute, func() bool {
		s, _ := c.Host(1).Status(g)
		return s.Progress[r2].Match >= st.Commit
	})
	if err := c.Do("transfer", func(ctx context.Context) error { return c.Host(1).TransferLeadership(ctx, g, 4) }); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("node 4 leads", time.Minute, func() bool { return c.Leader(g) == 4 })
	s2, _ := c.Host(2).Status(g)
	t.Logf("before crash: node 2 %+v; change at <= %d", s2, st.Commit)
	c.Crash(2, nil)
	heal()
	c.Restart(2)
	s2, _ = c.Host(2).Status(g)
	t.Logf("after restart: node 2 %+v", s2)
	propose(t, c, g, "two")
	defer func() {
		t.Logf("node 2 sender_unverified=%v", dropped(c, 2, "sender_unverified"))
	}()
	waitApplied(t, c, g, 2, 2)
}

// TestForgedLearnViaRemovedReplica: a node hosting no replica of the
// group speaks as a replica that was removed (bindSender lets it through
// for the removal notice) with an append carrying a membership change
// that "adds" replica 100 on itself; learnReplicas pins it. Then it speaks
// as replica 100 and has its entry applied.
func TestForgedLearnViaRemovedReplica(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 5})
	const g = 9
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "one")
	// A replica moves from node 3 to node 4: replica 3 is removed.
	r4 := replicaOnNode(change(t, c, g, multiraft.Change{Type: multiraft.AddLearner, Node: 4}), 4)
	if err := c.Host(4).JoinGroup(g, r4); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, 4, 1)
	change(t, c, g, multiraft.Change{Type: multiraft.AddVoter, Node: 4})
	removed := replicaOf(t, c, g, 3)
	change(t, c, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: 3})
	c.WaitFor("node 3 drops its replica", time.Minute, func() bool { return !slices.Contains(c.Host(3).Groups(), g) })
	settle(c)
	leader := c.Leader(g)
	var victim multiraft.NodeID
	for _, n := range []multiraft.NodeID{1, 2, 4} {
		if n != leader {
			victim = n
			break
		}
	}
	waitApplied(t, c, g, victim, 1)
	settle(c)
	st, _ := c.Host(victim).Status(g)
	const ghost = 100
	const liar = 5 // hosts no replica of the group
	ctx := binary.AppendUvarint(nil, 0)
	ctx = binary.AppendUvarint(ctx, 1)
	ctx = binary.AppendUvarint(ctx, ghost)
	ctx = binary.AppendUvarint(ctx, liar)
	cc, _ := proto.Marshal(&pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeAddNode.Enum(), NodeId: new(uint64(ghost))}}, Context: ctx})
	teach := &pb.Message{Type: pb.MsgApp.Enum(), From: new(removed), To: new(uint64(st.ReplicaID)),
		Term: new(st.Term), Index: new(st.Commit), LogTerm: new(st.Term), Commit: new(uint64(0)),
		Entries: []*pb.Entry{{Index: new(st.Commit + 1), Term: new(st.Term), Type: pb.EntryConfChangeV2.Enum(), Data: cc}}}
	forge(t, c, liar, victim, g, []*pb.Message{teach})
	settle(c)
	st, _ = c.Host(victim).Status(g)
	app := &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(ghost)), To: new(uint64(st.ReplicaID)),
		Term: new(st.Term + 1), Index: new(st.Commit), LogTerm: new(st.Term), Commit: new(st.Commit + 1),
		Entries: []*pb.Entry{{Index: new(st.Commit + 1), Term: new(st.Term + 1), Data: []byte("forged")}}}
	forge(t, c, liar, victim, g, []*pb.Message{app})
	settle(c)
	after, _ := c.Host(victim).Status(g)
	t.Logf("before %+v\nafter %+v", st, after)
	propose(t, c, g, "two")
	settle(c)
	settle(c)
	settle(c)
	for _, n := range []multiraft.NodeID{1, 2, 4} {
		s, _ := c.Host(n).Status(g)
		t.Logf("node %d applied %q status %+v", n, appliedLog(c, n, g), s)
	}
	got := appliedLog(c, victim, g)
	t.Logf("victim node %d applied %q; sender_unverified=%v removed_replica=%v", victim, got, dropped(c, victim, "sender_unverified"), dropped(c, victim, "removed_replica"))
	if s, _ := c.Host(victim).Status(g); slices.Contains(got, "forged") || s.Term != st.Term || s.Failed || len(got) != 2 {
		t.Fatalf("node %d followed a replica nobody allocated: term %d -> %d, applied %q (the others applied \"two\" at the index it committed the forged entry)", victim, st.Term, s.Term, got)
	}
}
