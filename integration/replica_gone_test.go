package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestLeaderReplicaGoneOnLiveNode: a leader replica leaves its host while
// the node stays live (RemoveGroup), so liveness sees nothing and raft's
// election clocks must replace it. The half-speed clock of followers that
// are not the successor (slowElectionClock) lengthens their lease by half
// an election timeout, never more: each group has a new leader within
// three election timeouts, about two on average, awake or quiesced.
func TestLeaderReplicaGoneOnLiveNode(t *testing.T) {
	for _, quiesce := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiesce=%v", quiesce), func(t *testing.T) {
			const groups, removed = 12, 6
			var electionTicks int
			c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
				cfg.DisableQuiescence = !quiesce
				electionTicks = cfg.ElectionTicks
			}})
			ids := c.CreateGroups(groups)
			c.SpreadLeaders(ids)
			for range 2 * electionTicks {
				c.Step()
			}
			var worst, total int
			for _, g := range ids[:removed] {
				old := leaderOf(c, g)
				if err := c.Do("remove the leader's replica", func(ctx context.Context) error { return c.Host(old).RemoveGroup(ctx, g) }); err != nil {
					t.Fatal(err)
				}
				ticks := 0
				for ; ticks < 10*electionTicks; ticks++ {
					if l := c.Leader(g); l != 0 && l != old {
						break
					}
					c.Step()
				}
				worst, total = max(worst, ticks), total+ticks
			}
			mean := float64(total) / removed
			t.Logf("new leaders after %.1f ticks on average, %d at worst (election timeout %d ticks)", mean, worst, electionTicks)
			if worst > 3*electionTicks || mean > float64(2*electionTicks) {
				t.Fatalf("a leader replica gone from a live node was replaced after %.1f ticks on average, %d at worst: want about two election timeouts, at most three", mean, worst)
			}
		})
	}
}
