package multiraft_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestGroupPanicIsContained: a panic while a group steps a message (raft
// panics on messages it cannot take) fails that group on that host alone:
// what waited on it is answered, the failure is counted and reported, and
// the host and its other groups go on, as does the group on the other
// replicas (which elect a new leader if the failed replica led).
func TestGroupPanicIsContained(t *testing.T) {
	t.Run("follower", func(t *testing.T) { testGroupPanic(t, false) })
	t.Run("leader", func(t *testing.T) { testGroupPanic(t, true) })
}

func testGroupPanic(t *testing.T, leads bool) {
	const victim, g, other = 2, 1, 2
	// The leader fails on a heartbeat response, a follower on a heartbeat.
	trigger := pb.MsgHeartbeat
	if leads {
		trigger = pb.MsgHeartbeatResp
	}
	var armed atomic.Bool
	var failedGroup atomic.Uint64
	var hostFailed atomic.Bool
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Transport: flotillatest.Memory, Configure: func(cfg *multiraft.Config) {
		if cfg.NodeID != victim {
			return
		}
		multiraft.SetStepHook(cfg, func(groupID uint64, m *pb.Message) {
			if groupID == g && armed.Load() && m.GetType() == trigger {
				panic(fmt.Sprintf("injected: cannot step %v", m.GetType()))
			}
		})
		cfg.Events.GroupFailed = func(groupID multiraft.GroupID, err error) { failedGroup.Store(uint64(groupID)) }
		cfg.Events.HostFailed = func(error) { hostFailed.Store(true) }
	}})
	c.CreateGroup(g, 1, 2, 3)
	c.CreateGroup(other, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g, other})
	if leader := c.Leader(g); (leader == victim) != leads {
		to := multiraft.NodeID(victim)
		if !leads {
			to = victim%3 + 1
		}
		if err := c.Do("moving leadership", func(ctx context.Context) error {
			return c.Host(leader).TransferLeadership(ctx, g, to)
		}); err != nil {
			t.Fatal(err)
		}
		c.WaitFor("the leader to serve", time.Minute, func() bool { return c.Leader(g) == to })
	}
	propose(t, c, g, "before")

	// A request on the victim that cannot complete is waiting when the
	// group fails: a read a follower cannot forward, a proposal a leader
	// cannot replicate.
	heal := c.Net.AddFilter(transport.DropType(pb.MsgReadIndex))
	if leads {
		heal()
		heal = c.Net.AddFilter(transport.DropType(pb.MsgApp))
	}
	defer heal()
	waiting := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if leads {
			_, err := c.Host(victim).Propose(ctx, g, []byte("stranded"))
			waiting <- err
			return
		}
		waiting <- c.Host(victim).ReadIndex(ctx, g)
	}()
	armed.Store(true)
	c.WaitFor("the victim's replica to fail", time.Minute, func() bool { return failedGroup.Load() == uint64(g) })
	select {
	case err := <-waiting:
		if !errors.Is(err, multiraft.ErrGroupFailed) {
			t.Fatalf("the waiting request ended with %v, want ErrGroupFailed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request waiting on the failed group was never answered")
	}
	h := c.Host(victim)
	if err := h.Err(); err != nil || hostFailed.Load() {
		t.Fatalf("the host failed with its group: %v", err)
	}
	if st, err := h.Status(g); err != nil || !st.Failed || st.Serving {
		t.Fatalf("status of the failed group: %+v, %v", st, err)
	}
	if got := c.Metric(victim, "flotilla_host_groups_failed"); got != 1 {
		t.Fatalf("flotilla_host_groups_failed = %v, want 1", got)
	}
	if _, err := h.Propose(context.Background(), g, []byte("x")); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("proposal to the failed group: %v", err)
	}
	if err := h.ReadIndex(context.Background(), g); !errors.Is(err, multiraft.ErrGroupFailed) {
		t.Fatalf("read of the failed group: %v", err)
	}
	// The group goes on without the failed replica; the host's other
	// group goes on with it.
	heal()
	propose(t, c, g, "after")
	propose(t, c, other, "other")
	c.WaitFor("the victim to apply the other group's command", time.Minute, func() bool {
		return c.SM(victim, other).Len() == 1
	})
	// The failed replica can still be removed, to be added back fresh.
	if err := c.Do("removing the failed replica", func(ctx context.Context) error { return h.RemoveGroup(ctx, g) }); err != nil {
		t.Fatal(err)
	}
	if got := c.Metric(victim, "flotilla_host_groups_failed"); got != 0 {
		t.Fatalf("flotilla_host_groups_failed = %v after the removal, want 0", got)
	}
}

// TestStorageReadErrorFailsHost: a read error from the disk (raft reads
// old entries for a lagging follower) fails the host observably: the
// embedder hears HostFailed, calls fail with ErrStopped, and the process
// does not die of the panic raft raises on a storage error; the other
// hosts go on.
func TestStorageReadErrorFailsHost(t *testing.T) {
	const g = 1
	var failReads [4]atomic.Bool
	var hostFailed [4]atomic.Bool
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Transport: flotillatest.Memory, Configure: func(cfg *multiraft.Config) {
		node := cfg.NodeID
		cfg.FS = errorfs.Wrap(cfg.FS, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if failReads[node].Load() && op.Kind == errorfs.OpFileReadAt && strings.HasSuffix(op.Path, ".sst") {
				return errorfs.ErrInjected
			}
			return nil
		}))
		cfg.MemTableSize = 256 << 10 // old entries reach tables soon
		cfg.EntryCacheBytes = 1      // and are read from there
		cfg.Events.HostFailed = func(error) { hostFailed[node].Store(true) }
	}})
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	leader := c.Leader(g)
	lagging := leader%3 + 1
	heal := c.Isolate(lagging)
	defer heal()
	for i := range 64 {
		if err := c.Do("a proposal", func(ctx context.Context) error {
			_, err := c.Host(leader).Propose(ctx, g, make([]byte, 32<<10))
			return err
		}); err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	failReads[leader].Store(true)
	heal()
	c.WaitFor("the leader to fail on a read error", time.Minute, func() bool { return c.Host(leader).Err() != nil })
	if !hostFailed[leader].Load() {
		t.Fatal("HostFailed not called")
	}
	if err := c.Host(leader).Err(); !strings.Contains(err.Error(), "read") {
		t.Fatalf("the host failed with %v, want the read error", err)
	}
	if _, err := c.Host(leader).Propose(context.Background(), g, []byte("x")); !errors.Is(err, multiraft.ErrStopped) {
		t.Fatalf("proposal on the failed host: %v", err)
	}
	if got := c.Metric(leader, "flotilla_host_groups_failed"); got != 0 {
		t.Fatalf("the host's failure was counted as %v failed groups", got)
	}
	propose(t, c, g, "after")
}

// panicSM panics when it applies the command "boom", as a buggy state
// machine would: the host fails the group alone (recoverGroup).
type panicSM struct{ multiraft.StateMachine }

func (s panicSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	for _, c := range cmds {
		if bytes.Equal(c.Data, []byte("boom")) {
			panic("injected: the state machine panics on boom")
		}
	}
	return s.StateMachine.Apply(cmds)
}

// TestConcurrentProposalsWithPanic: a group fails by a panic (its state
// machine's) in the pass that handed many other proposals to raft; every
// proposal is answered once and the host's proposal budget comes back to
// exactly 0 (a proposal answered twice gave its bytes back twice).
func TestConcurrentProposalsWithPanic(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Transport: flotillatest.Memory, Configure: func(cfg *multiraft.Config) {
		inner := cfg.StateMachine
		cfg.StateMachine = func(id multiraft.GroupID) multiraft.StateMachine { return panicSM{inner(id)} }
	}})
	h := c.Host(1)
	for round := multiraft.GroupID(1); round <= 20; round++ {
		c.CreateGroup(round, 1)
		c.WaitLeaders([]multiraft.GroupID{round})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 400 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				data := []byte("x")
				if i == 20 {
					data = []byte("boom")
				}
				_, _ = h.Propose(ctx, round, data)
			}()
		}
		close(start)
		c.WaitGroup("the proposals", time.Minute, &wg)
		if got := c.Metric(1, "flotilla_host_proposal_bytes"); got != 0 {
			t.Fatalf("round %d: flotilla_host_proposal_bytes = %v after every proposal was answered, want 0", round, got)
		}
	}
}

// TestFailedLeaderPendingIsAmbiguous: a leader's replica fails (a panic
// while stepping a follower's append response) while a proposal is
// pending there; the followers hold its entry and commit it under their
// new leader. Its caller hears ErrAmbiguous (wrapping ErrGroupFailed),
// never a failure that looks definite.
//
// The leader fails on the first append response that acknowledges the
// pending entry, so a follower holds it: failing on any append response
// (a late one for the entry before, say) could fail the leader before it
// sent the entry to anyone, and the entry was then rightly never applied.
func TestFailedLeaderPendingIsAmbiguous(t *testing.T) {
	const g = 1
	var victim, acked atomic.Uint64
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Transport: flotillatest.Memory, Configure: func(cfg *multiraft.Config) {
		node := cfg.NodeID
		multiraft.SetStepHook(cfg, func(groupID uint64, m *pb.Message) {
			if groupID == g && victim.Load() == uint64(node) && m.GetType() == pb.MsgAppResp && len(m.GetContext()) == 0 && !m.GetReject() &&
				m.GetIndex() > acked.Load() {
				panic("injected: cannot step an append response")
			}
		})
	}})
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	var leader multiraft.NodeID
	if err := c.Do("the first proposal", func(ctx context.Context) error {
		for ctx.Err() == nil {
			if leader = c.Leader(g); leader == 0 {
				continue
			}
			res, err := c.Host(leader).Propose(ctx, g, []byte("before"))
			if err == nil {
				acked.Store(res.Index)
			}
			if !errors.Is(err, multiraft.ErrNotLeader) && !errors.Is(err, multiraft.ErrAmbiguous) {
				return err
			}
		}
		return ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	victim.Store(uint64(leader))
	var perr error
	_ = c.Do("a proposal on the failing leader", func(ctx context.Context) error {
		_, perr = c.Host(leader).Propose(ctx, g, []byte("pending"))
		return nil
	})
	if !errors.Is(perr, multiraft.ErrGroupFailed) {
		t.Fatalf("proposal ended with %v, want the group's failure", perr)
	}
	others := []multiraft.NodeID{leader%3 + 1, (leader+1)%3 + 1}
	c.WaitFor("the other replicas to apply the pending proposal", time.Minute, func() bool {
		for _, n := range others {
			if c.SM(n, g).Len() < 2 {
				return false
			}
		}
		return true
	})
	if got := c.SM(others[0], g).Log()[1]; string(got) != "pending" {
		t.Fatalf("second command %q", got)
	}
	if !errors.Is(perr, multiraft.ErrAmbiguous) && !errors.Is(perr, multiraft.ErrStopped) {
		t.Fatalf("the proposal applied on the other replicas, but its caller heard a definite-looking %v (not ErrAmbiguous)", perr)
	}
}
