package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// quiesced reports whether a group is quiesced on every running node
// that hosts it.
func quiescedEverywhere(c *Cluster, want float64) func() bool {
	return func() bool { return c.Sum("flotilla_host_quiesced_groups") == want }
}

// leaderOf waits for the group's serving leader (a Status read may fall
// between two of them) and returns it.
func leaderOf(c *Cluster, g multiraft.GroupID) NodeID {
	var l NodeID
	c.WaitFor(fmt.Sprintf("a leader of group %d", g), time.Minute, func() bool { l = c.Leader(g); return l != 0 })
	return l
}

// waitNewLeaders waits until every group has a serving leader that is not
// on the dead node.
func waitNewLeaders(c *Cluster, ids []multiraft.GroupID, dead NodeID) {
	c.WaitFor("new leaders for the dead host's groups", time.Minute, func() bool {
		for _, g := range ids {
			if l := c.Leader(g); l == 0 || l == dead {
				return false
			}
		}
		return true
	})
}

// quiescedCluster is a 3-node cluster whose groups are all led, with
// leaders spread, and quiesced.
func quiescedCluster(t *testing.T, groups int) (*Cluster, []multiraft.GroupID) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	ids := c.CreateGroups(groups)
	c.SpreadLeaders(ids)
	c.WaitFor(fmt.Sprintf("all %d groups quiesced on 3 nodes", groups), time.Minute, quiescedEverywhere(c, float64(3*groups)))
	return c, ids
}

// TestQuiescence: 1,000 idle groups on 3 hosts quiesce; then the tick loop
// touches no group and the wire carries only liveness records (one per
// ordered pair of hosts per tick). One proposal wakes its group alone, on
// each host, and the group quiesces again.
func TestQuiescence(t *testing.T) {
	groups := 1000
	if raceEnabled {
		groups = 200
	}
	c, ids := quiescedCluster(t, groups)
	for range 3 {
		c.Step()
	}
	sums := func() (processed, messages, liveness, frames float64) {
		return c.Sum("flotilla_scheduler_processed_total"), c.Sum("flotilla_transport_messages_sent_total"),
			c.Sum("flotilla_transport_liveness_sent_total"), c.Sum("flotilla_transport_frames_sent_total")
	}
	p0, m0, l0, f0 := sums()
	const ticks = 10
	for range ticks {
		c.Step()
	}
	p1, m1, l1, f1 := sums()
	if ticking := c.Sum("flotilla_scheduler_ticking_groups"); ticking != 0 {
		t.Fatalf("%v groups still ticking", ticking)
	}
	if p1 != p0 || m1 != m0 {
		t.Fatalf("over %d ticks of a quiesced cluster: %v group passes and %v messages, want 0 and 0", ticks, p1-p0, m1-m0)
	}
	const pairs = 3 * 2
	if l1-l0 != pairs*ticks || f1-f0 != pairs*ticks {
		t.Fatalf("over %d ticks: %v liveness records in %v frames, want %d of each", ticks, l1-l0, f1-f0, pairs*ticks)
	}

	g := ids[len(ids)/2]
	w0 := c.Sum("flotilla_host_wakeups_total")
	if _, err := proposeWithTime(c, leaderOf(c, g), g, []byte("wake up")); err != nil {
		t.Fatal(err)
	}
	// The proposal returns once a quorum has it: the third replica may
	// wake a moment later.
	c.WaitFor("the proposal to wake its group's 3 replicas", time.Minute, func() bool {
		return c.Sum("flotilla_host_wakeups_total")-w0 >= 3
	})
	c.WaitFor("the group quiesced again", time.Minute, quiescedEverywhere(c, float64(3*groups)))
	if w := c.Sum("flotilla_host_wakeups_total") - w0; w != 3 {
		t.Fatalf("%v wake-ups by the time the group quiesced again, want 3", w)
	}
	for _, n := range c.Nodes() {
		if got := c.SM(n, g).Len(); got != 1 {
			t.Fatalf("node %d applied %d commands of group %d, want 1", n, got, g)
		}
	}
}

// TestDeadFollowerNode: a node that stops being live keeps no group
// awake: the groups the others lead quiesce without it (those written
// meanwhile too, with its replica lagging), and when it is back exactly
// the groups where it lags are woken and caught up; the others stay
// quiesced (their leaders tell its replicas so).
func TestDeadFollowerNode(t *testing.T) {
	groups := 60
	c, ids := quiescedCluster(t, groups)
	const dead = 3
	lagging := map[multiraft.GroupID]bool{}
	var led []multiraft.GroupID // by the others
	for _, g := range ids {
		if c.Leader(g) == dead {
			lagging[g] = true // re-elected elsewhere: a new term's entry
		} else {
			led = append(led, g)
		}
	}
	heal := c.Isolate(dead)
	for _, g := range led[:10] {
		if _, err := proposeWithTime(c, leaderOf(c, g), g, []byte("while 3 was away")); err != nil {
			t.Fatal(err)
		}
		lagging[g] = true
	}
	c.WaitFor("every group led by 1 or 2 and quiesced there", time.Minute, func() bool {
		for _, g := range ids {
			if l := c.Leader(g); l == 0 || l == dead {
				return false
			}
		}
		return c.Metric(1, "flotilla_host_quiesced_groups")+c.Metric(2, "flotilla_host_quiesced_groups") == float64(2*groups)
	})
	for range 5 {
		c.Step()
	}
	if ticking := c.Metric(1, "flotilla_scheduler_ticking_groups") + c.Metric(2, "flotilla_scheduler_ticking_groups"); ticking != 0 {
		t.Fatalf("%v groups ticking on nodes 1 and 2 while node 3 is away", ticking)
	}
	wakeups := func() float64 {
		return c.Metric(1, "flotilla_host_wakeups_total") + c.Metric(2, "flotilla_host_wakeups_total")
	}
	w0 := wakeups()
	heal()
	c.WaitFor("node 3 caught up", time.Minute, func() bool {
		for g := range lagging {
			if c.Leader(g) == 0 || c.SM(dead, g).Len() != c.SM(c.Leader(g), g).Len() {
				return false
			}
		}
		return true
	})
	c.WaitFor("every group quiesced again", time.Minute, quiescedEverywhere(c, float64(3*groups)))
	// Each lagging group's leader wakes, and wakes its other follower; a
	// lagging group may wake once more while node 3's replicas settle (a
	// late message of theirs), but groups where node 3 did not lag do not
	// wake: their leaders answer its replicas with quiesce heartbeats.
	if w := wakeups() - w0; w < float64(2*len(lagging)) || w > float64(3*len(lagging)) {
		t.Fatalf("node 3's return woke %v replicas on nodes 1 and 2, want 2 to 3 for each of the %d groups where it lagged", w, len(lagging))
	}
}

// TestKillHostUnderQuiescence: every group the killed host led gets a new
// leader among the others, from quiescence; the groups the others led stay
// quiesced and keep their leaders.
func TestKillHostUnderQuiescence(t *testing.T) {
	groups := 60
	c, ids := quiescedCluster(t, groups)
	const dead = 2
	leaders := map[multiraft.GroupID]NodeID{}
	for _, g := range ids {
		leaders[g] = c.Leader(g)
	}
	changes0 := c.Metric(1, "flotilla_host_leader_changes_total") + c.Metric(3, "flotilla_host_leader_changes_total")
	c.Crash(dead, nil)
	waitNewLeaders(c, ids, dead)
	moved := 0
	for _, g := range ids {
		if leaders[g] != dead && c.Leader(g) != leaders[g] {
			t.Fatalf("group %d moved from node %d to %d though its leader lived", g, leaders[g], c.Leader(g))
		}
		if leaders[g] == dead {
			moved++
		}
	}
	// Each moved group's new leader is seen by both survivors; a slow host
	// (-race) may see a few groups elect twice, never every group.
	if ch := c.Metric(1, "flotilla_host_leader_changes_total") + c.Metric(3, "flotilla_host_leader_changes_total") - changes0; ch < float64(2*moved) || ch > float64(3*moved) {
		t.Fatalf("%v leader changes seen on the survivors, want 2 to 3 for each of the %d groups that lost their leader", ch, moved)
	}
	c.WaitFor("the survivors' groups quiesced", time.Minute, func() bool {
		return c.Metric(1, "flotilla_host_quiesced_groups")+c.Metric(3, "flotilla_host_quiesced_groups") == float64(2*groups)
	})
}

// TestPartitionBetweenLiveHosts: a partition between nodes 1 and 2, both
// live to node 3, leaves node 3's groups quiesced everywhere and their
// leadership where it was.
func TestPartitionBetweenLiveHosts(t *testing.T) {
	groups := 60
	c, ids := quiescedCluster(t, groups)
	var third []multiraft.GroupID
	for _, g := range ids {
		if c.Leader(g) == 3 {
			third = append(third, g)
		}
	}
	w0 := c.Sum("flotilla_host_wakeups_total")
	heal := c.Net.AddFilter(transport.DropBetween(1, 2))
	for range 3 * 10 { // three election timeouts
		c.Step()
	}
	for _, g := range third {
		if l := c.Leader(g); l != 3 {
			t.Fatalf("group %d (led by 3) now led by %d", g, l)
		}
	}
	if q := c.Metric(3, "flotilla_host_quiesced_groups"); q < float64(len(third)) {
		t.Fatalf("node 3 has %v groups quiesced, fewer than the %d it leads", q, len(third))
	}
	// Only groups led by 1 or 2 wake (on the other side of the cut).
	if w := c.Sum("flotilla_host_wakeups_total") - w0; w > float64(2*(groups-len(third))) {
		t.Fatalf("%v wake-ups: more than the groups led by 1 or 2 on the far side", w)
	}
	heal()
	c.WaitFor("every group quiesced again", time.Minute, quiescedEverywhere(c, float64(3*groups)))
}

// TestQuiescedLeaderPartitionedNoStaleRead: a quiesced leader cut off from
// the others still believes it leads, but a read there does not complete
// while the others elect a new leader and write, and after the partition
// heals the read reflects that write.
func TestQuiescedLeaderPartitionedNoStaleRead(t *testing.T) {
	c, ids := quiescedCluster(t, 3)
	g := ids[0]
	old := c.Leader(g)
	if st, _ := c.Host(old).Status(g); st.Role != multiraft.RoleLeader {
		t.Fatalf("node %d: %v", old, st.Role)
	}
	heal := c.Isolate(old)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readDone := make(chan error, 1)
	go func() { readDone <- c.Host(old).ReadIndex(ctx, g) }()
	await.Until(t, 30*time.Second, "the read to be taken", func() bool {
		return c.MetricLabel(old, "flotilla_host_requests_waiting", "request", "read") == 1
	})
	var newLeader NodeID
	c.WaitFor("a new leader", 30*time.Second, func() bool {
		select {
		case err := <-readDone:
			t.Fatalf("the read on the cut-off quiesced leader returned: %v", err)
		default:
		}
		newLeader = c.Leader(g)
		return newLeader != 0 && newLeader != old
	})
	if _, err := proposeWithTime(c, newLeader, g, []byte("after the cut")); err != nil {
		t.Fatal(err)
	}
	heal()
	c.WaitFor("the read to end", time.Minute, func() bool {
		select {
		case err := <-readDone:
			if err == nil && c.SM(old, g).Len() < 1 {
				t.Fatalf("the read on the old leader returned without the new leader's write")
			}
			if err != nil && !errors.Is(err, multiraft.ErrNotLeader) && !errors.Is(err, multiraft.ErrAmbiguous) {
				t.Fatalf("the read ended with %v", err)
			}
			return true
		default:
			return false
		}
	})
}

// TestNoElectionStormAtStart: a new cluster's groups, and a whole
// cluster's groups after every host restarts, are led after one campaign
// each (the preferred replica's; the others hold back), with leaders
// spread evenly over the hosts; a host that restarts alone joins its
// quiesced groups without a campaign winning anywhere or waking them.
func TestNoElectionStormAtStart(t *testing.T) {
	const groups = 60
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	ids := c.CreateGroups(groups)
	c.WaitLeaders(ids)
	spread := func(when string) {
		t.Helper()
		led := map[NodeID]int{}
		for _, g := range ids {
			led[c.Leader(g)]++
		}
		for _, n := range c.Nodes() {
			if led[n] != groups/3 {
				t.Fatalf("%s: leaders per node %v, want %d each", when, led, groups/3)
			}
		}
	}
	if got := c.Sum("flotilla_host_elections_total"); got != groups {
		t.Fatalf("%v campaigns to elect %d new groups, want one each", got, groups)
	}
	spread("new groups")
	c.WaitFor("every group quiesced", time.Minute, quiescedEverywhere(c, 3*groups))

	// One host restarts: the groups it led elect again (its restart is
	// seen at once, by its new incarnation); the others keep their
	// leaders, and the restarted replicas learn them from the quiesced
	// groups' leaders.
	before := map[multiraft.GroupID]NodeID{}
	for _, g := range ids {
		before[g] = c.Leader(g)
	}
	c.Crash(2, nil)
	c.Restart(2)
	c.WaitLeaders(ids)
	c.WaitFor("the restarted host's replicas quiesced", time.Minute, quiescedEverywhere(c, 3*groups))
	for _, g := range ids {
		if before[g] != 2 && c.Leader(g) != before[g] {
			t.Fatalf("group %d, led by %d, moved to %d when node 2 restarted", g, before[g], c.Leader(g))
		}
	}

	// Every host restarts.
	for _, n := range c.Nodes() {
		c.Crash(n, nil)
	}
	for _, n := range []NodeID{1, 2, 3} {
		c.Restart(n)
	}
	c.WaitLeaders(ids)
	if got := c.Sum("flotilla_host_elections_total"); got != groups {
		t.Fatalf("%v campaigns to elect %d groups after a whole-cluster restart, want one each", got, groups)
	}
	spread("after a restart")
}

// TestFailedHostUnderQuiescence: a host that fails (a sync failed) stops
// sending liveness records too, so the quiesced groups it led, which
// nothing else would wake, get new leaders among the others.
func TestFailedHostUnderQuiescence(t *testing.T) {
	groups := 30
	c, ids := quiescedCluster(t, groups)
	const victim = 1
	var led []multiraft.GroupID
	for _, g := range ids {
		if c.Leader(g) == victim {
			led = append(led, g)
		}
	}
	c.FailSyncs(victim)
	if _, err := proposeWithTime(c, victim, led[0], []byte("on a dying disk")); err == nil {
		t.Fatal("a proposal was acknowledged by a host whose sync failed")
	}
	c.WaitFor("the host to stop", 30*time.Second, func() bool { return c.Host(victim).Err() != nil })
	c.WaitFor("new leaders for every group the failed host led", time.Minute, func() bool {
		for _, g := range led {
			if l := c.Leader(g); l == 0 || l == victim {
				return false
			}
		}
		return true
	})
}

// TestKillBusyLeaderHost: with quiescence off (every group awake and
// ticking, as under load), killing a host gives each group it led a new
// leader after one election: the successor (the first live voter after
// the leader in the group's preference) campaigns as liveness notices the
// dead node, and the other follower, whose election clock runs at half
// speed while it has a leader and which holds it once the leader is gone,
// never runs against it (two candidates of two live voters split the
// vote, and the group waits a randomized election timeout or more).
func TestKillBusyLeaderHost(t *testing.T) {
	groups := 90
	if raceEnabled {
		groups = 30
	}
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) { cfg.DisableQuiescence = true }})
	ids := c.CreateGroups(groups)
	c.SpreadLeaders(ids)
	const dead = 2
	moved := 0
	for _, g := range ids {
		if leaderOf(c, g) == dead {
			moved++
		}
	}
	// A few ticks with traffic, so that every follower's election clock
	// runs from a recent message.
	for range 3 {
		c.Step()
	}
	elections := func() float64 {
		return c.Metric(1, "flotilla_host_elections_total") + c.Metric(3, "flotilla_host_elections_total")
	}
	e0 := elections()
	c.Crash(dead, nil)
	waitNewLeaders(c, ids, dead)
	if e := elections() - e0; e != float64(moved) {
		t.Fatalf("%v elections (pre-votes included) on the survivors for the %d groups that lost their leader, want one each", e, moved)
	}
}
