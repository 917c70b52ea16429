package multiraft_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestMembershipEventThroughSnapshot (from a review): a follower cut off
// while a replica was added catches up by a snapshot from the leader; its
// membership changes (Status.Replicas gains node 4), and its subscription
// sees EventMembershipChanged with the new replicas, not only
// EventSnapshotInstalled.
func TestMembershipEventThroughSnapshot(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries, cfg.LogTailEntries = 5, 1
	}})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "x")
	cut := multiraft.NodeID(3)
	if c.Leader(g) == cut {
		cut = 2
	}
	waitApplied(t, c, g, cut, 1)
	sub := c.Host(cut).Subscribe(1024)
	heal := c.Isolate(cut)
	err := c.Do("AddReplica", func(ctx context.Context) error {
		_, err := c.Host(c.Leader(g)).AddReplica(ctx, g, 4, multiraft.AddLearner)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		propose(t, c, g, "y")
	}
	heal()
	c.WaitFor("the cut-off follower to see node 4", time.Minute, func() bool {
		st, err := c.Host(cut).Status(g)
		if err != nil {
			return false
		}
		for _, n := range st.Replicas {
			if n == 4 {
				return true
			}
		}
		return false
	})
	var installed, membership bool
	for done := false; !done; {
		select {
		case ev := <-sub.Events():
			switch ev.Kind {
			case multiraft.EventSnapshotInstalled:
				installed = true
			case multiraft.EventMembershipChanged:
				membership = true
			}
		default:
			done = true
		}
	}
	if !installed {
		t.Fatal("premise: the follower caught up without a snapshot")
	}
	if !membership {
		t.Fatal("the follower's membership changed (node 4 added) through a snapshot, and no EventMembershipChanged said so")
	}
}
