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

// TestAdmissionControl: a host holds at most MaxProposalsInFlight
// proposals across its groups; beyond that Propose fails at once with a
// *BusyError whose retry hint is one to two ticks, counted; the admitted
// proposals complete once the group can commit, and free their places.
func TestAdmissionControl(t *testing.T) {
	const bound = 8
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.MaxProposalsInFlight = bound
	}})
	ids := c.CreateGroups(2)
	c.WaitLeaders(ids)
	leader := c.Leader(ids[0])
	for c.Leader(ids[1]) != leader {
		from := c.Leader(ids[1])
		if from == 0 {
			c.WaitLeaders(ids[1:])
			continue
		}
		if err := c.Do("moving group 2's leader", func(ctx context.Context) error {
			return c.Host(from).TransferLeadership(ctx, ids[1], leader)
		}); err != nil && !errors.Is(err, multiraft.ErrNotLeader) {
			t.Fatal(err)
		}
	}
	// The followers are cut off: nothing commits, every proposal stays.
	var heals []func()
	for _, n := range c.Nodes() {
		if n != leader {
			heals = append(heals, c.Isolate(n))
		}
	}
	h := c.Host(leader)
	var wg sync.WaitGroup
	errc := make(chan error, 3*bound)
	for i := range 3 * bound {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.Propose(context.Background(), ids[i%2], []byte("x"))
			errc <- err
		}()
	}
	await.Until(t, 30*time.Second, "the refusals", func() bool {
		return c.Metric(leader, "flotilla_host_admission_refused_total") == 2*bound
	})
	for range 2 * bound {
		err := <-errc
		var busy *multiraft.BusyError
		if !errors.As(err, &busy) || !errors.Is(err, multiraft.ErrBusy) {
			t.Fatalf("a proposal beyond the bound: %v, want a *BusyError", err)
		}
		if busy.RetryAfter < c.TickInterval || busy.RetryAfter >= 2*c.TickInterval {
			t.Fatalf("retry after %v, want one to two ticks of %v", busy.RetryAfter, c.TickInterval)
		}
	}
	if got := c.Metric(leader, "flotilla_host_proposals_in_flight"); got != bound {
		t.Fatalf("%v proposals in flight, want the bound %d", got, bound)
	}
	for _, heal := range heals {
		heal()
	}
	c.WaitGroup("the admitted proposals", time.Minute, &wg)
	for range bound {
		if err := <-errc; err != nil {
			t.Fatalf("an admitted proposal: %v", err)
		}
	}
	if got := c.Metric(leader, "flotilla_host_proposals_in_flight"); got != 0 {
		t.Fatalf("%v proposals in flight after all were answered", got)
	}
	if _, err := proposeWithTime(c, leader, ids[0], []byte("after")); err != nil {
		t.Fatal(err)
	}
}
