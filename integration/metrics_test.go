package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestMetricsMove: a small cluster does the work each metric describes,
// with deterministic faults (a filter that drops messages and snapshot
// sends, a node crashed and restarted so its peers lose and regain it),
// and a scrape of the registries finds every metric moved. A metric that
// nothing sets, or that its code path stopped setting, fails here.
func TestMetricsMove(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 8
		cfg.LogTailEntries = 2
		cfg.EntryCacheBytes = 2 << 10 // so that followers catching up read from Pebble
	}})
	for g := GroupID(1); g <= 3; g++ {
		c.CreateGroup(g, 1, 2, 3)
	}
	c.WaitLeaders([]multiraft.GroupID{1, 2, 3})
	for i := range 20 {
		for g := GroupID(1); g <= 3; g++ {
			if _, err := proposeWithTime(c, c.Leader(g), g, fmt.Appendf(nil, "g%d-%d", g, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A proposal to a follower, a read, a transfer.
	leader := c.Leader(1)
	follower := leader%3 + 1
	if _, err := c.Host(follower).Propose(context.Background(), 1, []byte("x")); err == nil {
		t.Fatal("a follower took a proposal")
	}
	if err := c.Do("a read", func(ctx context.Context) error { return c.Host(leader).ReadIndex(ctx, 1) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Do("a transfer", func(ctx context.Context) error { return c.Host(leader).TransferLeadership(ctx, 1, follower) }); err != nil {
		t.Fatal(err)
	}
	// A snapshot send that fails, then one that succeeds (node 4 joins
	// group 2 after its log was truncated).
	heal := c.Net.AddFilter(transport.DropType(pb.MsgSnap))
	replicas := changeWithTime(t, c, c.Leader(2), 2, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(2, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("a failed snapshot send", time.Minute, func() bool { return c.Sum("flotilla_transport_snapshots_failed_total") > 0 })
	heal()
	waitApplied(t, c, 2, []NodeID{4}, 20)
	// Messages dropped by a filter; messages for a group a host no longer has.
	heal = c.Net.AddFilter(transport.DropGroup(3))
	c.Step()
	c.Step()
	heal()
	g3follower := c.Leader(3)%3 + 1
	if err := c.Do("removing a replica", func(ctx context.Context) error { return c.Host(g3follower).RemoveGroup(ctx, 3) }); err != nil {
		t.Fatal(err)
	}
	c.Step()
	c.Step()
	// A node crashed and restarted: its peers find it down, then back, and
	// catch it up. Its counters start again from zero, so what moved
	// before the crash is kept.
	before := map[string]float64{}
	for _, n := range c.Nodes() {
		for name, v := range c.Metrics(n) {
			before[name] += v
		}
	}
	c.Crash(3, rand.New(rand.NewPCG(1, 1)))
	for i := 0; i < 10; {
		c.WaitLeaders([]multiraft.GroupID{2}) // node 3 may have led it
		if _, err := proposeWithTime(c, c.Leader(2), 2, fmt.Appendf(nil, "while 3 is down %d", i)); err == nil {
			i++
		} else if !errors.Is(err, multiraft.ErrNotLeader) && !errors.Is(err, multiraft.ErrAmbiguous) {
			t.Fatal(err)
		}
	}
	c.Restart(3)
	c.WaitFor("node 3 reconnected", time.Minute, func() bool { return c.Sum("flotilla_transport_reconnects_total") > 0 })
	c.WaitFor("node 3 caught up", time.Minute, func() bool { return c.SM(3, 2) != nil && c.SM(3, 2).Len() >= 30 })

	var stuck []string
	for _, name := range []string{
		"flotilla_host_groups", "flotilla_host_groups_by_role", "flotilla_host_leaders", "flotilla_host_elections_total",
		"flotilla_host_leader_changes_total", "flotilla_host_leaderships_acquired_total", "flotilla_host_wakeups_total",
		"flotilla_host_peer_live", "flotilla_host_peer_liveness_changes_total", "flotilla_host_proposals_total", "flotilla_host_propose_duration_seconds",
		"flotilla_host_apply_duration_seconds", "flotilla_host_read_index_duration_seconds", "flotilla_host_messages_dropped_total",
		"flotilla_store_log_batches_total", "flotilla_store_log_items_total", "flotilla_store_log_entries_total",
		"flotilla_store_log_bytes_total", "flotilla_store_log_batch_items", "flotilla_store_log_batch_bytes",
		"flotilla_store_log_sync_duration_seconds", "flotilla_store_entry_cache_hits_total", "flotilla_store_entry_cache_misses_total",
		"flotilla_store_entry_cache_bytes", "flotilla_store_apply_batches_total", "flotilla_store_snapshots_installed_total",
		"flotilla_store_log_truncations_total",
		"flotilla_scheduler_processed_total", "flotilla_scheduler_queue_wait_seconds", "flotilla_scheduler_process_duration_seconds",
		"flotilla_scheduler_ticks_total", "flotilla_scheduler_ticking_groups",
		"flotilla_transport_messages_sent_total", "flotilla_transport_messages_received_total", "flotilla_transport_bytes_sent_total",
		"flotilla_transport_bytes_received_total", "flotilla_transport_frames_sent_total", "flotilla_transport_frames_received_total",
		"flotilla_transport_heartbeats_coalesced_total", "flotilla_transport_heartbeat_flushes_total",
		"flotilla_transport_liveness_sent_total", "flotilla_transport_liveness_received_total",
		"flotilla_transport_queue_dropped_total", "flotilla_transport_reconnects_total", "flotilla_transport_stream_up",
		"flotilla_transport_filter_dropped_total", "flotilla_transport_snapshots_sent_total", "flotilla_transport_snapshots_received_total",
		"flotilla_transport_snapshots_failed_total", "flotilla_transport_snapshot_bytes_sent_total",
		"flotilla_transport_snapshot_bytes_received_total",
	} {
		if c.Sum(name)+before[name] == 0 {
			stuck = append(stuck, name)
		}
	}
	sort.Strings(stuck)
	if len(stuck) > 0 {
		t.Fatalf("metrics that never moved: %v", stuck)
	}
}
