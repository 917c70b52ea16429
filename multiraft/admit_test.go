package multiraft_test

import (
	"slices"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// The tests below play a peer that lies: frames are injected into a host
// as if a node had sent them (transport.Network.Inject), through the same
// decoding and checks as any frame. Each forgery was found by a probe
// against running nodes; each must be dropped, counted, and harm nothing.

// forge sends a frame of raw messages (and heartbeat records) to node to
// as if node from had sent it.
func forge(t *testing.T, c *flotillatest.Cluster, from, to multiraft.NodeID, g multiraft.GroupID, msgs []*pb.Message, hbs ...*peerpb.Heartbeat) {
	t.Helper()
	fr := &peerpb.Frame{Heartbeats: hbs}
	for _, m := range msgs {
		fr.Messages = append(fr.Messages, &peerpb.GroupMessage{GroupId: uint64(g), Message: m})
	}
	b, err := proto.Marshal(fr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Net.Inject(uint64(from), uint64(to), b); err != nil {
		t.Fatal(err)
	}
}

// replicaOf returns the replica a node hosts in a group.
func replicaOf(t *testing.T, c *flotillatest.Cluster, g multiraft.GroupID, node multiraft.NodeID) uint64 {
	t.Helper()
	st, err := c.Host(node).Status(g)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(st.ReplicaID)
}

func dropped(c *flotillatest.Cluster, node multiraft.NodeID, reason string) float64 {
	return c.MetricLabel(node, "flotilla_host_messages_dropped_total", "reason", reason)
}

// appliedLog is what a node applied of a group, as strings.
func appliedLog(c *flotillatest.Cluster, node multiraft.NodeID, g multiraft.GroupID) []string {
	var got []string
	for _, b := range c.SM(node, g).Log() {
		got = append(got, string(b))
	}
	return got
}

// settle runs the cluster for an election timeout and more, so whatever a
// forged message set off has happened.
func settle(c *flotillatest.Cluster) {
	for range 30 {
		c.Step()
	}
}

// TestForgedRemovalNotice: a removal notice in a member's name deleted a
// partition on every node, for good. Now a notice from a node that does
// not host the member it names is dropped, and one from the right node
// is not enough alone: a majority of the voters must say so.
func TestForgedRemovalNotice(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4})
	const g = 2
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	notice := func(from, to multiraft.NodeID) *pb.Message {
		return &pb.Message{Type: pb.MsgUnreachable.Enum(), From: new(replicaOf(t, c, g, from)), To: new(replicaOf(t, c, g, to)),
			Index: new(uint64(1000))}
	}
	for _, victim := range []multiraft.NodeID{1, 2, 3} {
		other := victim%3 + 1
		// Node 4 hosts no replica of the group; it claims to be another's.
		forge(t, c, 4, victim, g, []*pb.Message{notice(other, victim)})
		// The member's own node, alone.
		forge(t, c, other, victim, g, []*pb.Message{notice(other, victim)})
	}
	settle(c)
	for _, node := range []multiraft.NodeID{1, 2, 3} {
		if !slices.Contains(c.Host(node).Groups(), g) {
			t.Fatalf("node %d deleted its replica on a forged removal notice", node)
		}
		if n := dropped(c, node, "notice_unverified"); n != 1 {
			t.Errorf("node %d: notice_unverified = %v, want 1 (the notice from node 4)", node, n)
		}
	}
	propose(t, c, g, "still here")
}

// TestForgedHeartbeatCommit: a heartbeat committing past the end of the
// log panicked raft (tocommit out of range) and the node exited. Now it
// is dropped before raft sees it, even from the leader's own node.
func TestForgedHeartbeatCommit(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3})
	const g = 3
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	follower := leader%3 + 1
	st, err := c.Host(follower).Status(g)
	if err != nil {
		t.Fatal(err)
	}
	forge(t, c, leader, follower, g, nil, &peerpb.Heartbeat{GroupId: g, From: replicaOf(t, c, g, leader),
		To: uint64(st.ReplicaID), Term: st.Term, Commit: 1 << 40})
	settle(c)
	if n := dropped(c, follower, "commit_beyond_log"); n != 1 {
		t.Fatalf("commit_beyond_log = %v, want 1", n)
	}
	if err := c.Host(follower).Err(); err != nil {
		t.Fatalf("the follower's host failed: %v", err)
	}
	if st, err := c.Host(follower).Status(g); err != nil || st.Failed {
		t.Fatalf("the follower's group: %v, %v", st.Failed, err)
	}
	propose(t, c, g, "after the forgery")
	waitApplied(t, c, g, follower, 1)
}

// TestForgedMessagesFromNonOwner: a node that does not host a replica
// cannot speak for it: an append at a higher term in the leader's name
// from another node would otherwise depose the leader and overwrite the
// follower's log.
func TestForgedMessagesFromNonOwner(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3})
	const g = 4
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "one")
	leader := c.Leader(g)
	follower := leader%3 + 1
	liar := follower%3 + 1
	if liar == leader {
		liar = liar%3 + 1
	}
	before, _ := c.Host(follower).Status(g)
	app := &pb.Message{Type: pb.MsgApp.Enum(), From: new(replicaOf(t, c, g, leader)), To: new(uint64(before.ReplicaID)),
		Term: new(before.Term + 5), Index: new(uint64(0)), LogTerm: new(uint64(0)), Commit: new(uint64(1)),
		Entries: []*pb.Entry{{Index: new(uint64(1)), Term: new(before.Term + 5), Data: []byte("forged")}}}
	forge(t, c, liar, follower, g, []*pb.Message{app}, &peerpb.Heartbeat{GroupId: g, From: replicaOf(t, c, g, leader),
		To: uint64(before.ReplicaID), Term: before.Term + 5})
	settle(c)
	if n := dropped(c, follower, "sender_mismatch"); n != 2 {
		t.Fatalf("sender_mismatch = %v, want 2 (the append and the heartbeat)", n)
	}
	after, _ := c.Host(follower).Status(g)
	if after.Term != before.Term {
		t.Fatalf("the follower's term moved from %d to %d on forged messages", before.Term, after.Term)
	}
	propose(t, c, g, "two")
	waitApplied(t, c, g, follower, 2)
	if got := appliedLog(c, follower, g); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("the follower applied %q", got)
	}
}

// TestMalformedMessagesFromOwner: from the right node, what raft would
// panic on or misread is still dropped: entries that do not follow their
// index (they would overwrite committed ones), a term-0 append (a local
// message to raft), an append response past the leader's log, a forwarded
// proposal.
func TestMalformedMessagesFromOwner(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3})
	const g = 6
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := range 3 {
		propose(t, c, g, []string{"a", "b", "c"}[i])
	}
	leader := c.Leader(g)
	follower := leader%3 + 1
	lst, _ := c.Host(leader).Status(g)
	fst, _ := c.Host(follower).Status(g)
	lr, fr := uint64(lst.ReplicaID), uint64(fst.ReplicaID)
	term := lst.Term
	behind := &pb.Message{Type: pb.MsgApp.Enum(), From: new(lr), To: new(fr), Term: new(term), Index: new(fst.Commit),
		LogTerm: new(term), Commit: new(fst.Commit),
		Entries: []*pb.Entry{{Index: new(uint64(1)), Term: new(term), Data: []byte("over a committed entry")}}}
	noTerm := &pb.Message{Type: pb.MsgApp.Enum(), From: new(lr), To: new(fr), Index: new(fst.Commit), LogTerm: new(term),
		Entries: []*pb.Entry{{Index: new(fst.Commit + 1), Term: new(term), Data: []byte("term 0")}}}
	forge(t, c, leader, follower, g, []*pb.Message{behind, noTerm})
	ack := &pb.Message{Type: pb.MsgAppResp.Enum(), From: new(fr), To: new(lr), Term: new(term), Index: new(uint64(1 << 40))}
	prop := &pb.Message{Type: pb.MsgProp.Enum(), From: new(fr), To: new(lr), Entries: []*pb.Entry{{Data: []byte("forwarded")}}}
	forge(t, c, follower, leader, g, []*pb.Message{ack, prop})
	settle(c)
	for _, want := range []struct {
		node   multiraft.NodeID
		reason string
		n      float64
	}{{follower, "malformed", 2}, {leader, "index_beyond_log", 1}, {leader, "unexpected_type", 1}} {
		if n := dropped(c, want.node, want.reason); n != want.n {
			t.Errorf("node %d: %s = %v, want %v", want.node, want.reason, n, want.n)
		}
	}
	for _, node := range []multiraft.NodeID{leader, follower} {
		if err := c.Host(node).Err(); err != nil {
			t.Fatalf("node %d failed: %v", node, err)
		}
		if st, _ := c.Host(node).Status(g); st.Failed {
			t.Fatalf("node %d: the group failed", node)
		}
	}
	propose(t, c, g, "d")
	waitApplied(t, c, g, follower, 4)
}

// TestForgedUnallocatedReplica: a node that hosts no replica of the group
// speaks as a replica ID nobody allocated: an append at a higher term with
// a commit covering it. Taking the first node heard from for such a
// replica let its entry be applied and then copied to every replica.
func TestForgedUnallocatedReplica(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4})
	const g = 4
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "one")
	follower := c.Leader(g)%3 + 1
	waitApplied(t, c, g, follower, 1)
	settle(c)
	st, _ := c.Host(follower).Status(g)
	const ghost = 100 // no replica of the group has this ID
	app := &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(ghost)), To: new(uint64(st.ReplicaID)),
		Term: new(st.Term + 1), Index: new(st.Commit), LogTerm: new(st.Term), Commit: new(st.Commit + 1),
		Entries: []*pb.Entry{{Index: new(st.Commit + 1), Term: new(st.Term + 1), Data: []byte("forged")}}}
	forge(t, c, 4, follower, g, []*pb.Message{app}, &peerpb.Heartbeat{GroupId: g, From: ghost, To: uint64(st.ReplicaID), Term: st.Term + 1})
	settle(c)
	if n := dropped(c, follower, "sender_unverified"); n != 2 {
		t.Fatalf("sender_unverified = %v, want 2 (the append and the heartbeat)", n)
	}
	propose(t, c, g, "two")
	for _, node := range []multiraft.NodeID{1, 2, 3} {
		waitApplied(t, c, g, node, 2)
		if got := appliedLog(c, node, g); !slices.Equal(got, []string{"one", "two"}) {
			t.Fatalf("node %d applied %q", node, got)
		}
	}
}
