package integration

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestFailedSyncStopsTheHost: when a node's disk fails a sync, its host
// stops (fail-stop): the embedder hears HostFailed once, calls fail with
// ErrStopped, and the rest of the cluster goes on without it.
func TestFailedSyncStopsTheHost(t *testing.T) {
	var failed atomic.Int32
	var victim atomic.Uint64
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		node := cfg.NodeID
		cfg.Events.HostFailed = func(error) {
			if uint64(node) == victim.Load() {
				failed.Add(1)
			}
		}
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	victim.Store(uint64(leader))
	c.FailSyncs(leader)
	_, err := proposeWithTime(c, leader, g, []byte("on a dying disk"))
	if err == nil {
		t.Fatal("a proposal was acknowledged by a host whose sync failed")
	}
	c.WaitFor("the host to stop", 30*time.Second, func() bool { return c.Host(leader).Err() != nil })
	if n := failed.Load(); n != 1 {
		t.Fatalf("HostFailed called %d times", n)
	}
	if _, err := c.Host(leader).Propose(context.Background(), g, []byte("x")); !errors.Is(err, multiraft.ErrStopped) {
		t.Fatalf("proposal on a failed host: %v", err)
	}
	var next NodeID
	c.WaitFor("a new leader among the others", time.Minute, func() bool {
		next = c.Leader(g)
		return next != 0 && next != leader
	})
	if _, err := proposeWithTime(c, next, g, []byte("after the failure")); err != nil {
		t.Fatal(err)
	}
}
