package multiraft_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestSnapshotWhileLogWriterBusy: a snapshot that reaches a host whose log
// writer refuses new work (its syncs are held, its queue full) waits in
// its group's backlog with its data, and is installed once the disk
// catches up; backpressure never fails the host.
func TestSnapshotWhileLogWriterBusy(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		multiraft.SetLogQueueItems(cfg, 16)
	}})
	const target = 1
	load := []multiraft.GroupID{2, 3, 4, 5}
	c.CreateGroup(target, 1, 2)
	for _, g := range load {
		c.CreateGroup(g, 1, 2, 3)
	}
	c.WaitLeaders(append([]multiraft.GroupID{target}, load...))
	for i := range 3 {
		propose(t, c, target, fmt.Sprintf("before-%d", i))
	}
	// Node 3 joins the target group as a learner; the network holds its
	// snapshots back until node 3's log writer is full.
	if err := c.Host(3).JoinGroup(target, 3); err != nil {
		t.Fatal(err)
	}
	heal := c.Net.AddFilter(transport.DropType(pb.MsgSnap))
	defer heal()
	if replicas := change(t, c, target, multiraft.Change{Type: multiraft.AddLearner, Node: 3}); replicas[3] != 3 {
		t.Fatalf("replicas %v, want replica 3 on node 3", replicas)
	}
	c.WaitFor("a snapshot for the learner", time.Minute, func() bool {
		return c.Metric(c.Leader(target), "flotilla_transport_snapshots_failed_total") > 0
	})

	c.HoldSyncs(3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, g := range load {
		leader := c.Leader(g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_, _ = c.Host(leader).Propose(ctx, g, make([]byte, 64))
				cancel()
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	rejected := func() float64 { return c.Metric(3, "flotilla_store_log_queue_rejected_total") }
	c.TickUntil("node 3's log writer to refuse work", time.Minute, func() bool { return rejected() > 0 })
	heal()
	c.TickUntil("the snapshot to reach node 3", time.Minute, func() bool {
		return c.Metric(3, "flotilla_transport_snapshots_received_total") > 0
	})
	// Many passes of the group on a host that still cannot write.
	before, polls := rejected(), 0
	c.TickUntil("30 ticks on the busy host", time.Minute, func() bool {
		if err := c.Host(3).Err(); err != nil {
			t.Fatalf("node 3 failed on a busy log writer: %v", err)
		}
		polls++
		return polls >= 300 && rejected() > before
	})
	if got := c.SM(3, target).Len(); got != 0 {
		t.Fatalf("the learner applied %d commands before its snapshot could be written", got)
	}

	c.ReleaseSyncs(3)
	stopLoad()
	propose(t, c, target, "after")
	waitApplied(t, c, target, 3, 4)
	if err := c.Host(3).Err(); err != nil {
		t.Fatalf("node 3 failed: %v", err)
	}
	c.WaitFor("node 3's backlogs to be written", time.Minute, func() bool {
		return c.Metric(3, "flotilla_host_inbox_bytes") == 0
	})
}

// TestSnapshotOnFullDisk: a learner's snapshot reaching a host whose disk
// is full (no table can be written: ENOSPC) trips the space alarm and
// waits with its data; it is installed once space returns, and the host
// never fails for it.
func TestSnapshotOnFullDisk(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Transport: flotillatest.Memory})
	const g = 1
	c.CreateGroup(g, 1, 2)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "before")
	if err := c.Host(3).JoinGroup(g, 3); err != nil {
		t.Fatal(err)
	}
	c.NoSpace(3, ".sst")
	change(t, c, g, multiraft.Change{Type: multiraft.AddLearner, Node: 3})
	c.WaitFor("the snapshot to reach node 3 (or node 3 to fail)", time.Minute, func() bool {
		return c.Metric(3, "flotilla_host_disk_space_alarm") == 1 || c.Host(3).Err() != nil
	})
	ticks := 0
	c.WaitFor("a few ticks", time.Minute, func() bool { ticks++; return ticks > 20 || c.Host(3).Err() != nil })
	if err := c.Host(3).Err(); err != nil {
		t.Fatalf("a snapshot on a full disk failed the whole host: %v", err)
	}
	c.NoSpace(3, "")
	waitApplied(t, c, g, 3, 1)
}

// TestBacklogKeepsControlInbox: a leader whose log writer cannot keep up
// keeps its refused appends in backlogs charged to the inbox budget; past
// the budget, the heartbeat answers and votes reaching the host are still
// taken (they have a budget of their own), so CheckQuorum does not step
// the leader down while its followers answer it.
func TestBacklogKeepsControlInbox(t *testing.T) {
	const budget = 512 << 10
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.InboxBudgetBytes = budget
		cfg.DisableQuiescence = true
		multiraft.SetLogQueueItems(cfg, 2)
	}})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	c.HoldSyncs(leader)
	defer c.ReleaseSyncs(leader)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, _ = c.Host(leader).Propose(pctx, g, make([]byte, 60<<10))
				pcancel()
			}
		}()
	}
	c.TickUntil("the leader's backlog past the inbox budget", 30*time.Second, func() bool {
		return c.Metric(leader, "flotilla_host_inbox_bytes") > budget+budget/8
	})
	ticks := func() (n float64) {
		for _, node := range c.Nodes() {
			n += c.Metric(node, "flotilla_scheduler_ticks_total")
		}
		return n
	}
	for range 30 { // three election timeouts, each tick taken by every host
		want := ticks() + float64(len(c.Nodes()))
		c.Clock.Advance(c.TickInterval)
		await.Until(t, 10*time.Second, "the hosts to take the tick", func() bool { return ticks() >= want })
	}
	if st, _ := c.Host(leader).Status(g); st.Role != multiraft.RoleLeader {
		t.Fatalf("node %d lost its leadership while its followers answered: the heartbeat answers it received were dropped at the inbox budget", leader)
	}
}
