package multiraft_test

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// rlSM is a cowSM whose write is held by its group's own channel, and
// whose PrepareSnapshot can be made to panic (once).
type rlSM struct {
	*cowSM
	prepared *atomic.Int32
	panicOne *atomic.Bool
}

func (s rlSM) PrepareSnapshot(meta multiraft.SnapshotMeta) (func(io.Writer) error, error) {
	if s.panicOne != nil && s.panicOne.Swap(false) {
		panic("review: PrepareSnapshot panics")
	}
	s.prepared.Add(1)
	return s.cowSM.PrepareSnapshot(meta)
}

type rlCluster struct {
	mu       sync.Mutex
	release  map[multiraft.GroupID]chan struct{}
	prepared map[multiraft.GroupID]*atomic.Int32
	panicOne map[multiraft.GroupID]*atomic.Bool
}

func (r *rlCluster) count(g multiraft.GroupID) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prepared[g].Load()
}

func newRLCluster(t *testing.T, ids []multiraft.GroupID, configure func(*multiraft.Config)) (*flotillatest.Cluster, *rlCluster) {
	rc := &rlCluster{release: map[multiraft.GroupID]chan struct{}{}, prepared: map[multiraft.GroupID]*atomic.Int32{}, panicOne: map[multiraft.GroupID]*atomic.Bool{}}
	for _, g := range ids {
		rc.release[g] = make(chan struct{})
		rc.prepared[g] = new(atomic.Int32)
		rc.panicOne[g] = new(atomic.Bool)
	}
	t.Cleanup(func() {
		for _, ch := range rc.release {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Configure: configure,
		StateMachine: func(_ multiraft.NodeID, g multiraft.GroupID) multiraft.StateMachine {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			return rlSM{cowSM: &cowSM{release: rc.release[g]}, prepared: rc.prepared[g], panicOne: rc.panicOne[g]}
		}})
	return c, rc
}

// snapshotAsync starts a Snapshot call and returns where its result lands.
func snapshotAsync(ctx context.Context, h *multiraft.Host, g multiraft.GroupID) <-chan error {
	done := make(chan error, 1)
	go func() { _, err := h.Snapshot(ctx, g); done <- err }()
	return done
}

// startGroups creates each group on node 1 alone, waits for their
// leaders and applies one command in each.
func startGroups(t *testing.T, c *flotillatest.Cluster, ids []multiraft.GroupID) {
	t.Helper()
	for _, g := range ids {
		c.CreateGroup(g, 1)
	}
	c.WaitLeaders(ids)
	for _, g := range ids {
		propose(t, c, g, "x")
	}
}

// holdWriterSlots starts Snapshot calls of groups 1 and 2, whose writes
// hold the host's two writer slots until their release channels close.
func holdWriterSlots(t *testing.T, c *flotillatest.Cluster, rc *rlCluster) (d1, d2 <-chan error) {
	t.Helper()
	h := c.Host(1)
	d1, d2 = snapshotAsync(t.Context(), h, 1), snapshotAsync(t.Context(), h, 2)
	c.WaitFor("groups 1 and 2 hold both slots", time.Minute, func() bool { return rc.count(1) == 1 && rc.count(2) == 1 })
	return d1, d2
}

// slotReachesGroup5 frees both writer slots (groups 1 and 2's writes end)
// and fails the test unless group 5's Snapshot call, d5, then returns.
func slotReachesGroup5(t *testing.T, rc *rlCluster, d1, d2, d5 <-chan error) {
	t.Helper()
	close(rc.release[1])
	close(rc.release[2])
	for _, d := range []<-chan error{d1, d2} {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	close(rc.release[5])
	select {
	case err := <-d5:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("group 5's Snapshot call hangs with both writer slots free: it waits in the host's queue and no release is left to wake it (prepared %d)", rc.count(5))
	}
}

// TestRemovedQueuedGroupsPassTheirSlot (from a review): two groups hold
// both writer slots; groups 3 and 4 queue for one, then group 5. Groups 3
// and 4 are removed while queued. When the two writes end, the slots must
// reach group 5 (a wake for a group that left goes to the next in line):
// its Snapshot call returns.
func TestRemovedQueuedGroupsPassTheirSlot(t *testing.T) {
	ids := []multiraft.GroupID{1, 2, 3, 4, 5}
	c, rc := newRLCluster(t, ids, func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 })
	startGroups(t, c, ids)
	h := c.Host(1)
	d1, d2 := holdWriterSlots(t, c, rc)
	snapshotAsync(t.Context(), h, 3)
	snapshotAsync(t.Context(), h, 4)
	for range 5 {
		c.Step() // 3 and 4 queue, in that order, before 5
	}
	d5 := snapshotAsync(t.Context(), h, 5)
	for range 5 {
		c.Step()
	}
	if n := rc.count(3) + rc.count(4) + rc.count(5); n != 0 {
		t.Fatalf("premise: %d snapshots prepared by queued groups", n)
	}
	for _, g := range []multiraft.GroupID{3, 4} {
		if err := c.Do("remove", func(ctx context.Context) error { return h.RemoveGroup(ctx, g) }); err != nil {
			t.Fatal(err)
		}
	}
	slotReachesGroup5(t, rc, d1, d2, d5)
}

// TestWakeNoLongerDuePassedOn (from a review): the same with groups 3
// and 4 queued for a SnapshotEntries snapshot that stops being due before
// their wake (their SnapshotEntries raised by SetGroupOptions): they hand
// the wake on, and group 5's Snapshot call returns.
func TestWakeNoLongerDuePassedOn(t *testing.T) {
	ids := []multiraft.GroupID{1, 2, 3, 4, 5}
	c, rc := newRLCluster(t, ids, func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 })
	startGroups(t, c, ids)
	h := c.Host(1)
	d1, d2 := holdWriterSlots(t, c, rc)
	for _, g := range []multiraft.GroupID{3, 4} {
		if err := h.SetGroupOptions(g, multiraft.GroupOptions{SnapshotEntries: 1}); err != nil {
			t.Fatal(err)
		}
		propose(t, c, g, "y") // due: queues for a slot
	}
	for range 5 {
		c.Step()
	}
	d5 := snapshotAsync(t.Context(), h, 5)
	for range 5 {
		c.Step()
	}
	if n := rc.count(3) + rc.count(4) + rc.count(5); n != 0 {
		t.Fatalf("premise: %d snapshots prepared by queued groups", n)
	}
	for _, g := range []multiraft.GroupID{3, 4} {
		if err := h.SetGroupOptions(g, multiraft.GroupOptions{SnapshotEntries: 1 << 40}); err != nil {
			t.Fatal(err)
		}
	}
	slotReachesGroup5(t, rc, d1, d2, d5)
}
