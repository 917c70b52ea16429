package integration

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestIdleHeartbeatFrames: with every group led and no traffic, and
// quiescence off (groups that cannot quiesce, as under a trickle of
// writes, heartbeat like this), the wire carries the same number of
// frames per tick at 100 groups as at 1,000 (one per peer per flush, at
// most one per ordered pair of hosts), while the coalesced heartbeats in
// them grow with the groups. `make soak` adds a 10,000-group run.
func TestIdleHeartbeatFrames(t *testing.T) {
	sizes := []int{100, 1000}
	if raceEnabled {
		sizes = []int{30, 100} // the race detector makes each host pass ~10x slower
	}
	if os.Getenv("FLOTILLA_SOAK_SEEDS") != "" {
		sizes = append(sizes, 10000)
	}
	perTick := map[int]float64{}
	for _, groups := range sizes {
		t.Run(fmt.Sprint(groups), func(t *testing.T) {
			frames, heartbeats := idleTraffic(t, groups)
			t.Logf("%d groups: %v frames and %v coalesced heartbeats per tick", groups, frames, heartbeats)
			const pairs = 3 * 2
			if frames != pairs {
				t.Fatalf("%v frames per tick, want %d: one per ordered pair of hosts", frames, pairs)
			}
			// Each group's leader heartbeats 2 followers, which answer.
			if want := float64(4 * groups); heartbeats < want/2 {
				t.Fatalf("%v heartbeats per tick for %d groups, want about %v", heartbeats, groups, want)
			}
			perTick[groups] = frames
		})
	}
	for _, groups := range sizes[1:] {
		if perTick[groups] != perTick[sizes[0]] {
			t.Fatalf("frames per tick: %v", perTick)
		}
	}
}

// idleTraffic returns the most common number of frames sent per tick by
// all hosts of an idle cluster of the given size, and the heartbeats they
// carried per tick.
func idleTraffic(t *testing.T, groups int) (frames, heartbeats float64) {
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) { cfg.DisableQuiescence = true }})
	ids := c.CreateGroups(groups)
	c.SpreadLeaders(ids) // so every ordered pair of hosts has heartbeats or responses
	sum := func(name string) float64 {
		var s float64
		for _, n := range c.Nodes() {
			s += c.Metric(n, name)
		}
		return s
	}
	for range 5 { // let the elections' last messages settle
		c.Step()
	}
	const ticks = 20
	var perTick []float64
	hb0 := sum("flotilla_transport_heartbeats_coalesced_total")
	for range ticks {
		before := sum("flotilla_transport_frames_sent_total")
		c.Step()
		perTick = append(perTick, sum("flotilla_transport_frames_sent_total")-before)
	}
	heartbeats = (sum("flotilla_transport_heartbeats_coalesced_total") - hb0) / ticks
	// The mode: a step that returned before its tick's work began shifts
	// a frame into the next step, which the mode ignores.
	slices.Sort(perTick)
	best, bestRun := perTick[0], 0
	for i := 0; i < len(perTick); {
		j := i
		for j < len(perTick) && perTick[j] == perTick[i] {
			j++
		}
		if j-i > bestRun {
			best, bestRun = perTick[i], j-i
		}
		i = j
	}
	return best, heartbeats
}
