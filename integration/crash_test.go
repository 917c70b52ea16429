package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestCrashRestart crashes a follower and then a leader while clients
// propose to every group, losing a random share of each crashed node's
// unsynced data, and restarts them; with in-memory and with on-disk state
// machines. Afterwards every replica of every
// group has applied the same commands, each at most once, and every
// acknowledged command is among them.
func TestCrashRestart(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(smKind(disk), func(t *testing.T) {
			testseed.Run(t, []uint64{1, 2, 3}, func(t *testing.T, seed uint64) { testCrashRestart(t, seed, disk) })
		})
	}
}

func smKind(disk bool) string {
	if disk {
		return "disk"
	}
	return "memory"
}

func testCrashRestart(t *testing.T, seed uint64, disk bool) {
	rng := rand.New(rand.NewPCG(seed, 99))
	// Frequent durable snapshots and truncation, so restarts restore state
	// machines from snapshots and lagging replicas are caught up by them.
	c := NewCluster(t, ClusterConfig{Nodes: 4, OnDisk: disk, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 16
		cfg.LogTailEntries = 4
	}})
	const groups = 20
	ids := c.CreateGroups(groups)

	var mu sync.Mutex
	acked := map[string]multiraft.Result{}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, g := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proposeLoop(ctx, c, g, func(cmd string, res multiraft.Result) {
				mu.Lock()
				acked[cmd] = res
				mu.Unlock()
			}, func(err error) { t.Error(err) })
		}()
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	progress := func(what string, more int) {
		target := ackedCount() + more
		c.WaitFor(what, 60*time.Second, func() bool { return ackedCount() >= target })
	}

	progress("proposals before any crash", 50)
	// Membership changes go into the logs that restarts replay: node 4
	// joins group 1 now and leaves it after the crashes.
	replicas := changeWithTime(t, c, c.Leader(1), 1, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(1, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	changeWithTime(t, c, c.Leader(1), 1, multiraft.Change{Type: multiraft.AddVoter, Node: 4})
	progress("proposals after node 4 joined group 1", 20)

	// A follower of group 1 first, then whoever leads group 1.
	victim := NodeID(1 + rng.IntN(3))
	if victim == c.Leader(1) {
		victim = victim%3 + 1
	}
	c.Crash(victim, rng)
	progress("proposals with a follower down", 30)
	c.Restart(victim)
	progress("proposals after the follower's restart", 30)
	var leader NodeID
	c.WaitFor("a leader of group 1", 30*time.Second, func() bool { leader = c.Leader(1); return leader != 0 })
	c.Crash(leader, rng)
	c.WaitLeaders(ids[:1])
	progress("proposals with a leader down", 30)
	c.Restart(leader)
	progress("proposals after the leader's restart", 30)
	c.WaitLeaders(ids[:1])
	changeWithTime(t, c, c.Leader(1), 1, multiraft.Change{Type: multiraft.RemoveReplica, Node: 4})
	progress("proposals after node 4 left group 1", 20)
	stop()
	wg.Wait()

	// Every group makes progress again: a final command through each
	// leader commits (and so brings every earlier entry to every replica).
	c.WaitLeaders(ids)
	for _, g := range ids {
		if _, err := proposeWithTime(c, c.Leader(g), g, fmt.Appendf(nil, "g%d-final", g)); err != nil {
			t.Fatalf("group %d after the crashes: %v", g, err)
		}
	}
	c.WaitFor("every replica to converge", 60*time.Second, func() bool {
		for _, g := range ids {
			n := c.SM(1, g).Len()
			for _, node := range []NodeID{2, 3} {
				if c.SM(node, g).Len() != n {
					if os.Getenv("FLOTILLA_TEST_LOG") != "" {
						s1, _ := c.Host(1).Status(g)
						s2, _ := c.Host(node).Status(g)
						t.Logf("group %d: node 1 has %d, node %d has %d; %+v; %+v", g, n, node, c.SM(node, g).Len(), s1, s2)
					}
					return false
				}
			}
		}
		return true
	})
	seen := map[string]bool{}
	for _, g := range ids {
		want := c.SM(1, g).Log()
		for _, node := range []NodeID{2, 3} {
			if got := c.SM(node, g).Log(); !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("group %d: node %d applied %d commands that differ from node 1's %d", g, node, len(got), len(want))
			}
		}
		for _, cmd := range want {
			if seen[string(cmd)] {
				t.Fatalf("group %d: %q applied twice", g, cmd)
			}
			seen[string(cmd)] = true
		}
	}
	for cmd, res := range acked {
		if !seen[cmd] {
			var g GroupID
			fmt.Sscanf(cmd, "g%d-", &g)
			at := "nothing"
			for i, p := range c.SM(1, g).Positions() {
				if p.Index == res.Index && p.Slot == res.Slot {
					at = fmt.Sprintf("%q", c.SM(1, g).Log()[i])
				}
			}
			var near []string
			for i, p := range c.SM(1, g).Positions() {
				if p.Index+3 >= res.Index && p.Index <= res.Index+3 {
					near = append(near, fmt.Sprintf("%d.%d=%s", p.Index, p.Slot, c.SM(1, g).Log()[i]))
				}
			}
			t.Fatalf("acknowledged command %q at %d.%d was lost: %s is there now; near it: %v", cmd, res.Index, res.Slot, at, near)
		}
	}
	t.Logf("%d commands acknowledged, %d applied", len(acked), len(seen))
}

// proposeLoop proposes unique commands to a group through its current
// leader until ctx ends, reporting each acknowledged one, and any error a
// proposal should never return.
func proposeLoop(ctx context.Context, c *Cluster, g multiraft.GroupID, ack func(string, multiraft.Result), fail func(error)) {
	retry := time.NewTicker(time.Millisecond)
	defer retry.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		cmd := fmt.Sprintf("g%d-c%d", g, i)
		h := c.Host(c.Leader(g))
		if h == nil {
			select {
			case <-ctx.Done():
			case <-retry.C:
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := h.Propose(pctx, g, []byte(cmd))
		cancel()
		switch {
		case err == nil:
			ack(cmd, res)
		case errors.Is(err, multiraft.ErrNotLeader), errors.Is(err, multiraft.ErrBusy), errors.Is(err, multiraft.ErrStopped),
			errors.Is(err, multiraft.ErrAmbiguous), errors.Is(err, multiraft.ErrRejected):
			select { // not acknowledged: try a new command
			case <-ctx.Done():
			case <-retry.C:
			}
		default:
			fail(fmt.Errorf("group %d: unexpected proposal error: %w", g, err))
			return
		}
	}
}
