package multiraft_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
