package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestLeaderReplicaGoneOnLiveNode: a leader replica leaves its host while
// the node stays live (RemoveGroup), so liveness sees nothing; its host
// asks the followers to wake (wakeFollowers) and they take that as the
// leader gone: the successor campaigns at once and the other follower
// holds back, so each group has a new leader within an election timeout,
// awake or quiesced (raft's clocks alone would take one to two, and the
// half-speed clock of followers that are not the successor more).
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
			if worst > electionTicks {
				t.Fatalf("a leader replica gone from a live node was replaced after %.1f ticks on average, %d at worst: want within an election timeout", mean, worst)
			}
		})
	}
}
