package integration

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestStalledDiskSurfacesAsBusy: while the leader's disk does not sync,
// proposals pile up only to the host's proposal budget; beyond it callers
// get ErrBusy at once instead of queueing without bound. Once the disk
// syncs again, what was accepted completes.
func TestStalledDiskSurfacesAsBusy(t *testing.T) {
	const budget = 64 << 10
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.ProposalBudgetBytes = budget
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	h := c.Host(leader)
	c.HoldSyncs(leader)

	const proposers = 200
	var busy, ok atomic.Int32
	var other error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < proposers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := h.Propose(ctx, g, make([]byte, 1024))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, multiraft.ErrBusy):
				busy.Add(1)
			default:
				mu.Lock()
				other = err
				mu.Unlock()
			}
		}()
	}
	// About budget/1 KiB proposals fit; the rest are refused at once.
	c.WaitFor("the budget to refuse proposals", 30*time.Second, func() bool { return busy.Load() >= proposers-budget/1024 })
	if inUse := c.Metric(leader, "flotilla_host_proposal_bytes"); inUse > budget {
		t.Fatalf("%v bytes of proposals held, budget %d", inUse, budget)
	}
	if ok.Load() != 0 {
		t.Fatal("a proposal was acknowledged while the leader could not sync")
	}
	c.ReleaseSyncs(leader)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	c.WaitFor("the accepted proposals to complete", time.Minute, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if other != nil {
		t.Fatalf("unexpected error: %v", other)
	}
	if ok.Load()+busy.Load() != proposers || ok.Load() == 0 {
		t.Fatalf("%d acknowledged, %d busy, of %d", ok.Load(), busy.Load(), proposers)
	}
}
