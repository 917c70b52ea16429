package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/multiraft"
)

// The ways a host could get stuck, or fail a whole node, for a local
// reason: each test here reproduces one and checks the host delays,
// refuses or fails exactly what it must, and answers everything it took.

// TestAbandonedTransferDoesNotBlockWrites: a leadership transfer whose
// caller gave up (its target is cut off) is dropped: raft stops holding
// proposals back for it, and it does not move leadership later when the
// target comes back.
func TestAbandonedTransferDoesNotBlockWrites(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	target := leader%3 + 1
	heal := c.Isolate(target)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := c.Host(leader).TransferLeadership(ctx, g, target)
	cancel()
	if !errors.Is(err, multiraft.ErrAmbiguous) {
		t.Fatalf("transfer to a cut-off node: %v, want ErrAmbiguous when the caller gives up", err)
	}
	ok := 0
	for i := 0; i < 60; i++ {
		c.Clock.Advance(c.TickInterval)
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.Host(leader).Propose(pctx, g, fmt.Appendf(nil, "w%d", i)); err == nil {
			ok++
		} else if !errors.Is(err, multiraft.ErrBusy) {
			t.Fatalf("proposal %d: %v", i, err)
		}
		cancel()
	}
	if ok != 60 {
		t.Fatalf("%d of 60 proposals succeeded after an abandoned transfer, want 60", ok)
	}
	heal()
	ticks := 0
	c.WaitFor("three election timeouts with the target back", time.Minute, func() bool {
		ticks++
		return ticks >= 2*30 // WaitFor advances at most every other poll
	})
	if now := c.Leader(g); now != leader {
		t.Fatalf("leadership moved to node %d after its transfer was abandoned", now)
	}
}

// TestSecondMembershipChangeRejected: a membership change proposed while
// another is pending is rejected definitely and at once (raft turns it
// into an empty entry), not left to its caller's deadline.
func TestSecondMembershipChangeRejected(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	follower := 3 - leader
	// The follower cannot make anything durable: the first change stays
	// pending.
	c.HoldSyncs(follower)
	entries := c.Metric(leader, "flotilla_store_log_entries_total")
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := c.Host(leader).ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.AddLearner, Node: 3})
		first <- err
	}()
	await.Until(t, 30*time.Second, "the first change in the leader's log", func() bool {
		return c.Metric(leader, "flotilla_store_log_entries_total") > entries
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Host(leader).ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.AddVoter, Node: 3})
	if !errors.Is(err, multiraft.ErrRejected) {
		t.Fatalf("second pending membership change: %v after %s, want ErrRejected", err, time.Since(start))
	}
	c.ReleaseSyncs(follower)
	c.WaitFor("the first change", time.Minute, func() bool {
		select {
		case err := <-first:
			if err != nil {
				t.Fatalf("first change: %v", err)
			}
			return true
		default:
			return false
		}
	})
}

// TestConcurrentProposeAndRemove: proposals that race with their group's
// removal are all answered, and every byte they charged to the host's
// proposal budget is returned.
func TestConcurrentProposeAndRemove(t *testing.T) {
	testseed.Run(t, testseed.Range(1, 3), testConcurrentProposeAndRemove)
}

func testConcurrentProposeAndRemove(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	groups := c.CreateGroups(40)
	var wg sync.WaitGroup
	var answered atomic.Int32
	errs := make(chan error, 4*len(groups))
	launch := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	proposals := 0
	for _, g := range groups {
		leader := c.Leader(g)
		h := c.Host(leader)
		n := 1 + rng.IntN(3)
		removeAt := rng.IntN(n + 1)
		for i := 0; i <= n; i++ {
			if i == removeAt {
				launch(func() {
					if err := h.RemoveGroup(context.Background(), g); err != nil && !errors.Is(err, multiraft.ErrGroupNotFound) {
						errs <- fmt.Errorf("remove group %d: %w", g, err)
					}
				})
				continue
			}
			proposals++
			launch(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := h.Propose(ctx, g, make([]byte, 100))
				if errors.Is(err, context.DeadlineExceeded) {
					errs <- fmt.Errorf("group %d: a proposal racing its group's removal was never answered: %w", g, err)
					return
				}
				answered.Add(1)
			})
		}
	}
	c.WaitGroup("every proposal and removal to return", time.Minute, &wg)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("%d of %d proposals answered", answered.Load(), proposals)
	}
	for _, n := range c.Nodes() {
		if b := c.Metric(n, "flotilla_host_proposal_bytes"); b != 0 {
			t.Errorf("node %d: %v bytes still charged to the proposal budget", n, b)
		}
	}
}

// TestReadsAndTransfersBounded: reads waiting on a cut-off replica and
// transfers waiting for a cut-off target are bounded per group like every
// other queue; beyond the bound callers get ErrBusy at once, and the
// refusals are counted.
func TestReadsAndTransfersBounded(t *testing.T) {
	const bound = 4
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.MaxGroupProposals = bound
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	cutOff := leader%3 + 1
	// The reads must wait on a follower that knows its leader (one that
	// knows none refuses them at once): a serving leader's followers may
	// not all have heard from it yet.
	c.WaitFor("the follower to know its leader", time.Minute, func() bool {
		st, err := c.Host(cutOff).Status(g)
		return err == nil && st.Leader != 0
	})
	heal := c.Isolate(cutOff)
	defer heal()
	var wg sync.WaitGroup
	defer wg.Wait()
	// fire makes n calls at once and returns their errors as they come;
	// the accepted ones wait until ctx ends.
	fire := func(ctx context.Context, n int, call func(context.Context) error) <-chan error {
		errc := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() { defer wg.Done(); errc <- call(ctx) }()
		}
		return errc
	}
	// refusals waits until the count of refused calls of a kind reaches
	// total, refused of them from errc's calls (refusals happen only once
	// the bound is reached), and checks that those, and only those, have
	// returned, with ErrBusy.
	refusals := func(node NodeID, kind string, errc <-chan error, refused, total int) {
		t.Helper()
		metric := func() float64 { return c.MetricLabel(node, "flotilla_host_requests_refused_total", "request", kind) }
		await.Until(t, 30*time.Second, fmt.Sprintf("%d %ss refused", total, kind), func() bool { return metric() >= float64(total) })
		for range refused {
			if err := <-errc; !errors.Is(err, multiraft.ErrBusy) {
				t.Fatalf("a %s beyond the bound ended with %v, want ErrBusy", kind, err)
			}
		}
		if got := metric(); got != float64(total) {
			t.Fatalf("%v %ss refused, want %d", got, kind, total)
		}
		select {
		case err := <-errc:
			t.Fatalf("a %s within the bound returned: %v", kind, err)
		default:
		}
	}

	read := func(ctx context.Context) error { return c.Host(cutOff).ReadIndex(ctx, g) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reads := fire(ctx, 3*bound, read)
	refusals(cutOff, "read", reads, 2*bound, 2*bound)
	// Callers that leave free their places.
	cancel()
	for range bound {
		if err := <-reads; !errors.Is(err, context.Canceled) {
			t.Fatalf("a waiting read ended with %v", err)
		}
	}
	await.Until(t, 30*time.Second, "the host to forget the reads whose callers left", func() bool {
		return c.MetricLabel(cutOff, "flotilla_host_requests_waiting", "request", "read") == 0
	})
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	refusals(cutOff, "read", fire(ctx, bound+1, read), 1, 2*bound+1)

	if got := c.MetricLabel(cutOff, "flotilla_host_requests_waiting", "request", "read"); got != bound {
		t.Fatalf("%v reads waiting, want %d", got, bound)
	}

	transfer := func(ctx context.Context) error { return c.Host(leader).TransferLeadership(ctx, g, cutOff) }
	refusals(leader, "transfer", fire(ctx, 3*bound, transfer), 2*bound, 2*bound)
	if got := c.MetricLabel(leader, "flotilla_host_requests_waiting", "request", "transfer"); got != bound {
		t.Fatalf("%v transfers waiting, want %d", got, bound)
	}
}
