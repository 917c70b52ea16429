package multiraft_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestAddReplicaOverAStaleReplica (from a review): node 4's replica was
// removed from the group while node 4 was down, so it comes back with its
// old replica (collected only once it hears a member's notice).
// AddReplica(node 4) on the leader allots a new replica ID; node 4 must
// not answer its JoinGroupOn with success because some replica of the
// group exists there: AddReplica fails, and promotes nothing (a voter no
// host runs would count in the quorum).
func TestAddReplicaOverAStaleReplica(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "x")
	var old multiraft.ReplicaID
	err := c.Do("AddReplica(node 4)", func(ctx context.Context) (err error) {
		old, err = c.Host(c.Leader(g)).AddReplica(ctx, g, 4, multiraft.AddVoter)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, g, 4, 1)

	c.Crash(4, nil)
	change(t, c, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: 4})
	c.Restart(4) // its replica of the group is back, stale: nothing ticks yet

	if st, err := c.Host(4).Status(g); err != nil || st.ReplicaID != old {
		t.Fatalf("premise: node 4's replica after the restart: %+v, %v; want the stale replica %d", st, err, old)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id, err := c.Host(c.Leader(g)).AddReplica(ctx, g, 4, multiraft.AddVoter)
	if err != nil {
		t.Logf("AddReplica over the stale replica failed (fine): %v", err)
		return
	}
	st, err := c.Host(4).Status(g)
	if err != nil || st.ReplicaID != id {
		lst, _ := c.Host(c.Leader(g)).Status(g)
		t.Fatalf("AddReplica(node 4) = replica %d, nil (created, promoted), but node 4 hosts %+v (%v): the leader's replicas %v, learners %v",
			id, st.ReplicaID, err, lst.Replicas, lst.Learners)
	}
}
