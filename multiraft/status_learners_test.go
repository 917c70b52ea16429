package multiraft_test

import (
	"context"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestStatusLearnersIsCallersOwn (from a review): Status gives the caller
// its own copy of what published statuses share, but Learners was the
// published slice itself: a caller that edited its Status changed what
// every later Status call returned.
func TestStatusLearnersIsCallersOwn(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 2})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	var learner multiraft.ReplicaID
	if err := c.Do("AddReplica", func(ctx context.Context) (err error) {
		learner, err = c.Host(c.Leader(g)).AddReplica(ctx, g, 2, multiraft.AddLearner)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := c.Host(c.Leader(g))
	st, err := h.Status(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Learners) != 1 || st.Learners[0] != learner {
		t.Fatalf("premise: learners %v, want [%d]", st.Learners, learner)
	}
	st.Learners[0] = 999 // the caller edits its own Status
	again, err := h.Status(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Learners) != 1 || again.Learners[0] != learner {
		t.Fatalf("a caller's edit of its Status.Learners changed the host's published status: Learners now %v, want [%d]", again.Learners, learner)
	}
}
