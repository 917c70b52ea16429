package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
)

// TestProducerStateTravels: a partition log's producer state is
// replicated with the records: a retry of an acknowledged batch is
// answered with its original offsets by a leader that learned the
// partition from a snapshot, and after every node restarted from its disk.
func TestProducerStateTravels(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.StateMachine = nil
		cfg.DiskStateMachine = partition.Factory(partition.DefaultConfig())
		cfg.SnapshotEntries = 8
		cfg.LogTailEntries = 2
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	produce := func(seq uint64, rec string) partition.Result {
		t.Helper()
		for {
			c.WaitLeaders([]multiraft.GroupID{g})
			p := &partition.Produce{ProducerID: 5, Sequence: seq, TimestampMs: uint64(time.Now().UnixMilli()), Records: [][]byte{[]byte(rec)}}
			res, err := proposeWithTime(c, c.Leader(g), g, p.Marshal())
			if errors.Is(err, multiraft.ErrNotLeader) || errors.Is(err, multiraft.ErrAmbiguous) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			r, err := partition.DecodeResult(res.Value)
			if err != nil || r.Err != nil {
				t.Fatalf("produce %d: %+v %v", seq, r, err)
			}
			return r
		}
	}
	var last partition.Result
	for seq := uint64(0); seq < 20; seq++ {
		last = produce(seq, fmt.Sprintf("r%d", seq))
	}
	// Node 4 joins from a snapshot (the log was truncated) and leads.
	replicas := changeWithTime(t, c, c.Leader(g), g, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(g, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	changeWithTime(t, c, c.Leader(g), g, multiraft.Change{Type: multiraft.AddVoter, Node: 4})
	if err := c.Do("transfer to node 4", func(ctx context.Context) error { return c.Host(c.Leader(g)).TransferLeadership(ctx, g, 4) }); err != nil {
		t.Fatal(err)
	}
	if c.Metric(4, "flotilla_store_snapshots_installed_total") == 0 {
		t.Fatal("node 4 did not join from a snapshot")
	}
	if r := produce(19, "r19"); !r.Duplicate || r.BaseOffset != last.BaseOffset {
		t.Fatalf("retry on the snapshot-fed leader: %+v, first %+v", r, last)
	}
	// Every node crashes and restarts: whoever leads then knows only what
	// its disk kept.
	rng := rand.New(rand.NewPCG(3, 3))
	for _, n := range []NodeID{1, 2, 3, 4} {
		c.Crash(n, rng)
	}
	for _, n := range []NodeID{1, 2, 3, 4} {
		c.Restart(n)
	}
	if r := produce(19, "r19"); !r.Duplicate || r.BaseOffset != last.BaseOffset {
		t.Fatalf("retry after every node restarted: %+v", r)
	}
	if r := produce(20, "r20"); r.Duplicate || r.BaseOffset != last.BaseOffset+1 {
		t.Fatalf("the next batch: %+v", r)
	}
}
