package multiraft_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestAddReplicaOneCall: AddReplica on the leader adds a voter on another
// host in one call (the replica is created there and catches up); called
// again it resumes and changes nothing; a learner stays a learner, and a
// voter is never demoted by it; removal is one ChangeMembership, after
// which the removed replica deletes itself.
func TestAddReplicaOneCall(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 5})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for range 3 {
		propose(t, c, g, "x")
	}
	add := func(node multiraft.NodeID, kind multiraft.ChangeType) multiraft.ReplicaID {
		t.Helper()
		var id multiraft.ReplicaID
		err := c.Do("AddReplica", func(ctx context.Context) (err error) {
			id, err = c.Host(c.Leader(g)).AddReplica(ctx, g, node, kind)
			return err
		})
		if err != nil {
			t.Fatalf("AddReplica(node %d, %v): %v", node, kind, err)
		}
		return id
	}
	voter := add(4, multiraft.AddVoter)
	waitApplied(t, c, g, 4, 3)
	if again := add(4, multiraft.AddVoter); again != voter {
		t.Fatalf("AddReplica again gave replica %d, first %d", again, voter)
	}
	if again := add(4, multiraft.AddLearner); again != voter {
		t.Fatalf("AddReplica(AddLearner) of a voter gave replica %d, first %d", again, voter)
	}
	learner := add(5, multiraft.AddLearner)
	waitApplied(t, c, g, 5, 3)
	propose(t, c, g, "y")
	waitApplied(t, c, g, 5, 4)
	// The leader's view: node 4 a voter (not demoted), node 5 a learner.
	st, err := c.Host(c.Leader(g)).Status(g)
	if err != nil {
		t.Fatal(err)
	}
	if st.Replicas[voter] != 4 || st.Replicas[learner] != 5 || len(st.Replicas) != 5 {
		t.Fatalf("replicas %v, want 5 with %d on node 4 and %d on node 5", st.Replicas, voter, learner)
	}
	if len(st.Learners) != 1 || st.Learners[0] != learner {
		t.Fatalf("learners %v, want [%d] (node 4 a voter, node 5 a learner)", st.Learners, learner)
	}

	change(t, c, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: 5})
	c.WaitFor("the removed replica to delete itself", time.Minute, func() bool {
		_, err := c.Host(5).Status(g)
		return errors.Is(err, multiraft.ErrGroupNotFound)
	})

	err = c.Do("AddReplica of a bad kind", func(ctx context.Context) error {
		_, err := c.Host(c.Leader(g)).AddReplica(ctx, g, 5, multiraft.RemoveReplica)
		return err
	})
	if !errors.Is(err, multiraft.ErrInvalid) {
		t.Fatalf("AddReplica(RemoveReplica) = %v, want ErrInvalid", err)
	}
	follower := multiraft.NodeID(1)
	if follower == c.Leader(g) {
		follower = 2
	}
	var nl *multiraft.NotLeaderError
	if _, err := c.Host(follower).AddReplica(t.Context(), g, 5, multiraft.AddVoter); !errors.As(err, &nl) {
		t.Fatalf("AddReplica on a follower = %v, want a *NotLeaderError", err)
	}
}
