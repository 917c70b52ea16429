package integration

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestReadIndexNoStaleRead: a leader cut off from the others keeps
// believing it leads for a while, but a read on it does not complete until
// it can confirm what the group committed meanwhile; a read after the
// partition heals reflects the write the new leader acknowledged. A read
// on a follower reflects every acknowledged write.
func TestReadIndexNoStaleRead(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	old := c.Leader(g)
	if _, err := proposeWithTime(c, old, g, []byte("w1")); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if n == old {
			continue
		}
		readWithTime(t, c, n, g)
		if got := c.SM(n, g).Len(); got != 1 {
			t.Fatalf("read on follower %d returned with %d commands applied, want 1", n, got)
		}
	}

	// A read on the old leader, cut off while it still believes it leads,
	// may not complete while it is cut off (nor return stale data after
	// the others have moved on); once it has stepped down it knows no
	// leader, and a read there fails at once.
	heal := c.Isolate(old)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readDone := make(chan error, 1)
	go func() { readDone <- c.Host(old).ReadIndex(ctx, g) }()
	await.Until(t, 30*time.Second, "the read to be taken", func() bool {
		select {
		case err := <-readDone:
			t.Fatalf("the read on the old leader returned at once: %v", err)
		default:
		}
		return c.MetricLabel(old, "flotilla_host_requests_waiting", "request", "read") == 1
	})
	var newLeader NodeID
	c.WaitFor("a new leader", 30*time.Second, func() bool {
		newLeader = c.Leader(g)
		return newLeader != 0 && newLeader != old
	})
	if _, err := proposeWithTime(c, newLeader, g, []byte("w2")); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the cut-off leader to step down", 30*time.Second, func() bool {
		st, err := c.Host(old).Status(g)
		return err == nil && st.Role != multiraft.RoleLeader
	})
	if err := c.Host(old).ReadIndex(ctx, g); !errors.Is(err, multiraft.ErrNotLeader) {
		t.Fatalf("a read on a cut-off replica that knows no leader: %v, want ErrNotLeader at once", err)
	}
	// Three election timeouts of ticks, each given a moment to be processed.
	for i := 0; i < 3*10; i++ {
		c.Clock.Advance(c.TickInterval)
		select {
		case err := <-readDone:
			if err == nil && c.SM(old, g).Len() < 2 {
				t.Fatal("a read on the cut-off old leader returned stale state")
			}
			t.Fatalf("read on the cut-off old leader returned (%v) while partitioned", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	heal()
	c.WaitFor("the old leader's read after healing", 30*time.Second, func() bool {
		select {
		case err := <-readDone:
			if err != nil {
				t.Fatal(err)
			}
			return true
		default:
			return false
		}
	})
	if got := c.SM(old, g).Log(); len(got) != 2 || string(got[1]) != "w2" {
		t.Fatalf("after its read the old leader has applied %q, want w1 and w2", got)
	}
}

// readWithTime runs ReadIndex on a node while moving the clock.
func readWithTime(t *testing.T, c *Cluster, node multiraft.NodeID, g multiraft.GroupID) {
	t.Helper()
	if err := c.Do("a read", func(ctx context.Context) error { return c.Host(node).ReadIndex(ctx, g) }); err != nil {
		t.Fatal(err)
	}
}

// TestTransferLeadership: leadership moves to the node asked for, the
// embedder hears about it on both hosts, and the new leader serves.
func TestTransferLeadership(t *testing.T) {
	var mu sync.Mutex
	events := map[NodeID][]multiraft.LeaderInfo{} // node -> events
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		node := cfg.NodeID
		cfg.Events.LeaderChanged = func(li multiraft.LeaderInfo) {
			mu.Lock()
			events[node] = append(events[node], li)
			mu.Unlock()
		}
	}})
	const g = 7
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	from := c.Leader(g)
	to := from%3 + 1
	if err := c.Do("the transfer", func(ctx context.Context) error { return c.Host(from).TransferLeadership(ctx, g, to) }); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the new leader to serve", 30*time.Second, func() bool { return c.Leader(g) == to })
	if _, err := proposeWithTime(c, to, g, []byte("after transfer")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	last := func(node NodeID) multiraft.LeaderInfo {
		evs := events[node]
		if len(evs) == 0 {
			t.Fatalf("node %d heard no leader event", node)
		}
		return evs[len(evs)-1]
	}
	if li := last(to); !li.Local || li.Leader != to || li.GroupID != g {
		t.Fatalf("new leader's last event %+v", li)
	}
	if li := last(from); li.Local || li.Leader != to {
		t.Fatalf("old leader's last event %+v", li)
	}
	// Asking a follower to transfer says who leads.
	if err := c.Host(from).TransferLeadership(context.Background(), g, from); !errors.Is(err, multiraft.ErrNotLeader) {
		t.Fatalf("transfer asked of a follower: %v", err)
	}
}
