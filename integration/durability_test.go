package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestNothingLeavesBeforeFsync proves invariant 1 from both sides. A
// follower whose fsync is held never tells the leader it has the new
// entry (the group commits through the other follower); once the fsync
// returns, the acknowledgement goes out. A leader whose fsync is held
// does not acknowledge the client, even after its followers have applied
// the command; it does once its fsync returns.
func TestNothingLeavesBeforeFsync(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	var followers []NodeID
	for _, n := range []NodeID{1, 2, 3} {
		if n != leader {
			followers = append(followers, n)
		}
	}
	slow := followers[0]

	st, err := c.Host(leader).Status(g)
	if err != nil {
		t.Fatal(err)
	}
	next := st.Commit + 1 // the index the proposal will take
	var acked atomic.Bool
	c.Net.AddFilter(func(from, _ transport.NodeID, e transport.Envelope) transport.Verdict {
		m := e.Message
		if NodeID(from) == slow && m.GetType() == pb.MsgAppResp && !m.GetReject() && m.GetIndex() >= next {
			acked.Store(true)
		}
		return transport.Deliver
	})
	c.HoldSyncs(slow)
	if _, err := proposeWithTime(c, leader, g, []byte("while a follower cannot sync")); err != nil {
		t.Fatal(err)
	}
	if acked.Load() {
		t.Fatal("a follower acknowledged an entry its fsync had not covered")
	}
	c.ReleaseSyncs(slow)
	c.WaitFor("the follower's acknowledgement after its fsync", 30*time.Second, acked.Load)

	c.HoldSyncs(leader)
	type outcome struct {
		res multiraft.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := c.Host(leader).Propose(ctx, g, []byte("while the leader cannot sync"))
		done <- outcome{res, err}
	}()
	c.WaitFor("both followers to apply the command", 30*time.Second, func() bool {
		return c.SM(followers[0], g).Len() == 2 && c.SM(followers[1], g).Len() == 2
	})
	select {
	case o := <-done:
		t.Fatalf("the client was acknowledged (%+v, %v) before the leader's fsync", o.res, o.err)
	default:
	}
	c.ReleaseSyncs(leader)
	var o outcome
	c.WaitFor("the acknowledgement after the leader's fsync", 30*time.Second, func() bool {
		select {
		case o = <-done:
			return true
		default:
			return false
		}
	})
	if o.err != nil {
		t.Fatal(o.err)
	}
}

// proposeWithTime proposes while moving the clock, so retransmissions
// happen if a message is lost.
func proposeWithTime(c *Cluster, node multiraft.NodeID, g multiraft.GroupID, data []byte) (res multiraft.Result, err error) {
	err = c.Do("a proposal", func(ctx context.Context) error {
		res, err = c.Host(node).Propose(ctx, g, data)
		return err
	})
	return res, err
}
