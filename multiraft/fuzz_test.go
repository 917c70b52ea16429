package multiraft_test

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// FuzzStepFrames feeds arbitrary frames to a running cluster's hosts, as
// if a peer had sent them (transport.Network.Inject: the transport's
// decoding and checks, then the host's sender binding and shape checks,
// then raft). The first byte picks the sending node (1-3, or 4, which
// hosts nothing), the second the receiving one; the rest is the frame.
// Whatever arrives, no host may fail and no group may fail: a frame that
// raft would panic on must never reach it. Seeds hold a message of every
// type, in the right name and in another's; `make test` runs them, and
// `make soak` fuzzes for minutes.
func FuzzStepFrames(f *testing.F) {
	c := flotillatest.NewCluster(f, flotillatest.Config{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := 0; i < 3; i++ {
		c.Step()
	}
	// Node n hosts replica r of the group (IDs are given in node order).
	st, err := c.Host(1).Status(g)
	if err != nil {
		f.Fatal(err)
	}
	replica := map[multiraft.NodeID]uint64{}
	for r, n := range st.Replicas {
		replica[n] = uint64(r)
	}
	term := st.Term
	seed := func(from, to multiraft.NodeID, fr *peerpb.Frame) {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(from), byte(to)}, b...))
	}
	for t := range pb.MessageType_name {
		for _, from := range []multiraft.NodeID{2, 4} {
			m := &pb.Message{Type: pb.MessageType(t).Enum(), From: new(replica[2]), To: new(replica[1]), Term: new(term),
				Index: new(uint64(1 << 40)), LogTerm: new(term), Commit: new(uint64(1 << 40)), RejectHint: new(uint64(1 << 40)),
				Entries: []*pb.Entry{{Index: new(uint64(1)), Term: new(term + 1), Data: []byte("e")}}}
			seed(from, 1, &peerpb.Frame{Messages: []*peerpb.GroupMessage{{GroupId: g, Message: m}}})
		}
	}
	for _, commit := range []uint64{0, 1, 1 << 40} {
		seed(2, 1, &peerpb.Frame{Heartbeats: []*peerpb.Heartbeat{{GroupId: g, From: replica[2], To: replica[1], Term: term, Commit: commit}}})
		seed(2, 1, &peerpb.Frame{Heartbeats: []*peerpb.Heartbeat{{GroupId: g, From: replica[2], To: replica[1], Term: term + 1, Commit: commit,
			Quiesce: true}}})
	}
	seed(2, 1, &peerpb.Frame{HeartbeatResponses: []*peerpb.Heartbeat{{GroupId: g, From: replica[2], To: replica[1], Term: term, Wake: true}}})
	seed(2, 1, &peerpb.Frame{Liveness: true, Incarnation: 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		from, to := multiraft.NodeID(data[0]%4+1), multiraft.NodeID(data[1]%3+1)
		_ = c.Net.Inject(uint64(from), uint64(to), data[2:])
		c.StepFor(t)
		for _, node := range c.Nodes() {
			h := c.Host(node)
			if err := h.Err(); err != nil {
				t.Fatalf("node %d failed: %v", node, err)
			}
			for _, id := range h.Groups() {
				if st, err := h.Status(id); err == nil && st.Failed {
					t.Fatalf("node %d: group %d failed", node, id)
				}
			}
		}
	})
}
