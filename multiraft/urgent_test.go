package multiraft_test

import (
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestJoinedLearnerNotUrgent: a learner that joins an idle group learns
// its leader before its snapshot tells it the leader's node (so the
// leader looks like one on a node that is not live, and the group goes
// to the scheduler's control lane); once it knows, the group leaves the
// control lane without waiting for new entries.
func TestJoinedLearnerNotUrgent(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	replicas := change(t, c, g, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	var r4 multiraft.ReplicaID
	for r, n := range replicas {
		if n == 4 {
			r4 = r
		}
	}
	if err := c.Host(4).JoinGroup(g, r4); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the learner to know its leader", time.Minute, func() bool {
		st, err := c.Host(4).Status(g)
		return err == nil && st.Leader != 0
	})
	c.WaitFor("no group urgent on the learner's host", 10*time.Second, func() bool { return multiraft.UrgentGroups(c.Host(4)) == 0 })
	for _, n := range c.Nodes() {
		if u := multiraft.UrgentGroups(c.Host(n)); u != 0 {
			t.Fatalf("node %d keeps %d group(s) in the control lane with a live, serving leader", n, u)
		}
	}
}
