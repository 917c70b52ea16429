package multiraft_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestSnapshotWaitersBounded (from a review): Snapshot's bound
// (MaxProposals) counts every call not yet answered, taken by a pass or
// not, and whether its caller still waits or not: with a Snapshotter's
// write held, calls that are taken and abandoned fill the bound, and the
// next is ErrBusy.
func TestSnapshotWaitersBounded(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c, cc := newCowCluster(t, 1, release, func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 })
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "a")
	h := c.Host(1)
	if err := h.SetGroupOptions(g, multiraft.GroupOptions{MaxProposals: 2}); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = h.Snapshot(t.Context(), g) }() // its write is held
	c.WaitFor("the held write", time.Minute, func() bool {
		sm := cc.on(1)
		sm.mu.Lock()
		defer sm.mu.Unlock()
		return len(sm.prepared) == 1
	})
	const calls = 50
	busy := 0
	for range calls {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
		_, err := h.Snapshot(ctx, g)
		cancel()
		if errors.Is(err, multiraft.ErrBusy) {
			busy++
		}
	}
	if busy == 0 {
		t.Fatalf("%d Snapshot calls left waiting on a group bounded to 2 requests: none was ErrBusy", calls)
	}
}

// countedCow counts the snapshots prepared across a host's groups.
type countedCow struct {
	*cowSM
	prepared *atomic.Int32
}

func (s countedCow) PrepareSnapshot(meta multiraft.SnapshotMeta) (func(io.Writer) error, error) {
	s.prepared.Add(1)
	return s.cowSM.PrepareSnapshot(meta)
}

// TestSnapshotWritersBounded: a host writes at most two snapshots at
// once; a third group asking waits for a slot without capturing its state
// (no goroutine, no prepared snapshot), and gets its snapshot once a slot
// frees.
func TestSnapshotWritersBounded(t *testing.T) {
	release := make(chan struct{})
	var prepared atomic.Int32
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Configure: func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 },
		StateMachine: func(multiraft.NodeID, multiraft.GroupID) multiraft.StateMachine {
			return countedCow{cowSM: &cowSM{release: release}, prepared: &prepared}
		}})
	ids := []multiraft.GroupID{1, 2, 3}
	startGroups(t, c, ids)
	h := c.Host(1)
	done := make(chan error, len(ids))
	for _, g := range ids {
		go func() { _, err := h.Snapshot(t.Context(), g); done <- err }()
	}
	c.WaitFor("two snapshots prepared", time.Minute, func() bool { return prepared.Load() == 2 })
	for range 20 { // the third waits, captured nothing
		c.Step()
		if n := prepared.Load(); n != 2 {
			t.Fatalf("%d snapshots prepared with two writer slots held", n)
		}
	}
	close(release)
	for range ids {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := prepared.Load(); n != 3 {
		t.Fatalf("%d snapshots prepared, want 3", n)
	}
}

// panicPrepareSM panics in PrepareSnapshot.
type panicPrepareSM struct{ *cowSM }

func (panicPrepareSM) PrepareSnapshot(multiraft.SnapshotMeta) (func(io.Writer) error, error) {
	panic("prepare panics")
}

// TestWriterSlotsOutlivePanics: a PrepareSnapshot that panics fails its
// group alone and gives its writer slot back: after two such groups (as
// many as the slots), another group's snapshot is still written.
func TestWriterSlotsOutlivePanics(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Configure: func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 },
		StateMachine: func(_ multiraft.NodeID, g multiraft.GroupID) multiraft.StateMachine {
			if g <= 2 {
				return panicPrepareSM{&cowSM{}}
			}
			return &cowSM{}
		}})
	ids := []multiraft.GroupID{1, 2, 3}
	startGroups(t, c, ids)
	h := c.Host(1)
	for _, g := range ids[:2] {
		if _, err := h.Snapshot(t.Context(), g); !errors.Is(err, multiraft.ErrGroupFailed) {
			t.Fatalf("Snapshot of group %d, whose PrepareSnapshot panics: %v, want ErrGroupFailed", g, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := h.Snapshot(ctx, 3); err != nil {
		t.Fatalf("group 3's snapshot after two panics: %v (a writer slot leaked?)", err)
	}
}
