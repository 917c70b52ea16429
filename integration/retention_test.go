package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
)

// Partition logs under retention: the crash and linearizability suites
// again, on the partition log (its records kept in the Raft log) with a
// small retention by size, trimmed all along as a node's sweep would.

// partitionCluster runs partition logs.
func partitionCluster(t *testing.T, nodes int, configure func(*multiraft.Config)) *Cluster {
	return NewCluster(t, ClusterConfig{Nodes: nodes, Configure: configure,
		DiskStateMachine: func(_ NodeID, _ GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
			return partition.New(partition.DefaultConfig(), r)
		}})
}

// partitionLog returns a node's log of a group, nil if none.
func partitionLog(c *Cluster, node NodeID, g GroupID) *partition.Log {
	l, _ := c.StateMachine(node, g).(*partition.Log)
	return l
}

// produce appends one record through a host.
func produce(ctx context.Context, h *multiraft.Host, g GroupID, value string) (partition.Result, error) {
	p := &partition.Produce{TimestampMs: uint64(time.Now().UnixMilli()), Records: [][]byte{[]byte(value)}}
	res, err := h.Propose(ctx, g, p.Marshal())
	if err != nil {
		return partition.Result{}, err
	}
	r, err := partition.DecodeResult(res.Value)
	if err == nil {
		err = r.Err
	}
	return r, err
}

// retain sets every group's retention and starts a sweeper that trims
// each group through its leader every few milliseconds until the test ends.
func retain(t *testing.T, c *Cluster, ids []GroupID, r partition.Retention) {
	for _, g := range ids {
		if _, err := proposeWithTime(c, c.Leader(g), g, partition.MarshalConfigure(r)); err != nil {
			t.Fatalf("retention of group %d: %v", g, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			<-tick.C
			for _, g := range ids {
				leader := c.Leader(g)
				l, h := partitionLog(c, leader, g), c.Host(leader)
				if l == nil || h == nil {
					continue
				}
				start, trim, err := l.RetentionTarget(uint64(time.Now().UnixMilli()))
				if err != nil || !trim {
					continue
				}
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				_, _ = h.Propose(pctx, g, partition.MarshalTrim(start))
				cancel()
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestPartitionRetentionCrash: partition logs trimmed all along while a
// follower and then a leader crash (losing a random share of unsynced
// data) and restart, and a fourth replica joins one group (by snapshot:
// the logs are truncated behind the retention). Afterwards every replica
// of a group holds the same start, high watermark and records, and every
// acknowledged record at or past the start is at its offset.
func TestPartitionRetentionCrash(t *testing.T) {
	testseed.Run(t, []uint64{1, 2}, testPartitionRetentionCrash)
}

func testPartitionRetentionCrash(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 15))
	c := partitionCluster(t, 4, func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 16
		cfg.LogTailEntries = 4
	})
	const groups = 6
	ids := c.CreateGroups(groups)
	c.WaitLeaders(ids)
	retain(t, c, ids, partition.Retention{Bytes: 200, SegmentBytes: 50})

	var mu sync.Mutex
	acked := map[GroupID]map[uint64]string{} // offset -> record
	ctx, stop := context.WithCancel(context.Background())
	for _, g := range ids {
		acked[g] = map[uint64]string{} // all before the producers start: they read the outer map
	}
	var wg sync.WaitGroup
	for _, g := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			retry := time.NewTicker(time.Millisecond)
			defer retry.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				value := fmt.Sprintf("g%d-r%04d", g, i)
				h := c.Host(c.Leader(g))
				if h == nil {
					select { // no leader yet: the test's waits move the clock
					case <-ctx.Done():
					case <-retry.C:
					}
					continue
				}
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := produce(pctx, h, g, value)
				cancel()
				switch {
				case err == nil:
					mu.Lock()
					acked[g][r.BaseOffset] = value
					mu.Unlock()
				case errors.Is(err, multiraft.ErrNotLeader), errors.Is(err, multiraft.ErrBusy), errors.Is(err, multiraft.ErrStopped),
					errors.Is(err, multiraft.ErrAmbiguous), errors.Is(err, multiraft.ErrRejected), errors.Is(err, context.Canceled):
				default:
					t.Errorf("group %d: produce: %v", g, err)
					return
				}
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range acked {
			n += len(m)
		}
		return n
	}
	progress := func(what string, more int) {
		target := count() + more
		c.WaitFor(what, time.Minute, func() bool { return count() >= target })
	}

	progress("records before any crash", 60)
	replicas := changeWithTime(t, c, c.Leader(1), 1, multiraft.Change{Type: multiraft.AddLearner, Node: 4})
	if err := c.Host(4).JoinGroup(1, replicaOn(replicas, 4)); err != nil {
		t.Fatal(err)
	}
	progress("records after node 4 joined group 1", 30)
	victim := NodeID(1 + rng.IntN(3))
	if victim == c.Leader(1) {
		victim = victim%3 + 1
	}
	c.Crash(victim, rng)
	progress("records with a follower down", 30)
	c.Restart(victim)
	progress("records after the follower's restart", 30)
	var leader NodeID
	c.WaitFor("a leader of group 1", 30*time.Second, func() bool { leader = c.Leader(1); return leader != 0 })
	c.Crash(leader, rng)
	c.WaitLeaders(ids[:1])
	progress("records with a leader down", 30)
	c.Restart(leader)
	progress("records after the leader's restart", 30)
	stop()
	wg.Wait()

	c.WaitLeaders(ids)
	for _, g := range ids {
		if _, err := proposeWithTime(c, c.Leader(g), g, (&partition.Produce{Records: [][]byte{[]byte("final")}}).Marshal()); err != nil {
			t.Fatalf("group %d after the crashes: %v", g, err)
		}
	}
	holders := func(g GroupID) []NodeID {
		if g == 1 {
			return []NodeID{1, 2, 3, 4}
		}
		return []NodeID{1, 2, 3}
	}
	c.WaitFor("every replica to converge", time.Minute, func() bool {
		for _, g := range ids {
			var first partition.Bounds
			for i, node := range holders(g) {
				l := partitionLog(c, node, g)
				if l == nil {
					return false
				}
				b, err := l.Bounds()
				if err != nil || (i > 0 && b != first) {
					return false
				}
				first = b
			}
		}
		return true
	})
	trimmed := false
	for _, g := range ids {
		var want [][]byte
		for i, node := range holders(g) {
			l := partitionLog(c, node, g)
			b, _ := l.Bounds()
			trimmed = trimmed || b.Start > 0
			recs, _, err := l.Fetch(b.Start, 1<<20, 1<<30)
			if err != nil || uint64(len(recs)) != b.HighWatermark-b.Start {
				t.Fatalf("group %d node %d: fetch from the start %d: %d records of %d, %v", g, node, b.Start, len(recs), b.HighWatermark-b.Start, err)
			}
			if i == 0 {
				want = recs
			} else if !slices.EqualFunc(recs, want, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("group %d: node %d holds other records than node %d", g, node, holders(g)[0])
			}
			for off, value := range acked[g] {
				if off >= b.Start && string(recs[off-b.Start]) != value {
					t.Fatalf("group %d node %d: acknowledged %q at offset %d, holds %q", g, node, value, off, recs[off-b.Start])
				}
			}
		}
	}
	if !trimmed {
		t.Fatal("retention never trimmed: the test proves nothing")
	}
	if n := c.Metric(4, "flotilla_store_snapshots_installed_total"); n < 1 {
		t.Fatalf("node 4 installed %v snapshots: it did not join by snapshot", n)
	}
}
