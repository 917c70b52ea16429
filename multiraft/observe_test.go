package multiraft_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// TestSubscribe: a subscription sees a group created, its leader, a
// replica added in one call (membership), and snapshots saved; one that is
// never read from loses events with a count and never holds the host up;
// Close, and the host's Close, close the channels.
func TestSubscribe(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 4, Configure: func(cfg *multiraft.Config) {
		cfg.SnapshotEntries = 5
	}})
	read := c.Host(1).Subscribe(1024)
	stuck := c.Host(1).Subscribe(1) // never read
	closed := c.Host(2).Subscribe(4)
	closed.Close()
	closed.Close() // twice is fine
	if _, ok := <-closed.Events(); ok {
		t.Fatal("a closed subscription's channel is open")
	}

	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := range 20 {
		propose(t, c, g, string(rune('a'+i)))
	}
	var id multiraft.ReplicaID
	err := c.Do("AddReplica", func(ctx context.Context) (err error) {
		id, err = c.Host(c.Leader(g)).AddReplica(ctx, g, 4, multiraft.AddVoter)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	want := map[multiraft.EventKind]bool{multiraft.EventGroupCreated: false, multiraft.EventLeaderChanged: false,
		multiraft.EventMembershipChanged: false, multiraft.EventSnapshotSaved: false}
	c.WaitFor("the events", time.Minute, func() bool {
		for {
			select {
			case ev := <-read.Events():
				if ev.GroupID != g {
					t.Fatalf("event %v for group %d", ev.Kind, ev.GroupID)
				}
				if ev.Kind == multiraft.EventMembershipChanged && ev.Replicas[id] != 4 {
					continue // the learner, then the voter: wait for the replica on node 4
				}
				want[ev.Kind] = true
			default:
				for _, seen := range want {
					if !seen {
						return false
					}
				}
				return true
			}
		}
	})
	if stuck.Dropped() == 0 {
		t.Fatal("a subscription never read from dropped nothing")
	}
	if n := c.Metric(1, "flotilla_host_events_dropped_total"); n < float64(stuck.Dropped()) {
		t.Fatalf("events_dropped_total %v, the stuck subscription dropped %d", n, stuck.Dropped())
	}
	c.Close()
	for _, s := range []*multiraft.Subscription{read, stuck} {
		for range s.Events() { // drains, then ends: the host closed it
		}
	}
}
