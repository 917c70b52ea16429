package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/integration"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestGroupPanicIsContained: a panic while a group steps a message (raft
// panics on messages it cannot take) fails that group on that host alone:
// what waited on it is answered, the failure is counted and reported, and
// the host and its other groups go on, as does the group on the other
// replicas.
func TestGroupPanicIsContained(t *testing.T) {
	const victim, g, other = 2, 1, 2
	var armed atomic.Bool
	var failedGroup atomic.Uint64
	var hostFailed atomic.Bool
	c := integration.NewCluster(t, integration.ClusterConfig{Nodes: 3, Transport: integration.Memory, Configure: func(cfg *multiraft.Config) {
		if cfg.NodeID != victim {
			return
		}
		multiraft.SetStepHook(cfg, func(groupID uint64, m *pb.Message) {
			if groupID == g && armed.Load() && m.GetType() == pb.MsgHeartbeat {
				panic(fmt.Sprintf("injected: cannot step %v", m.GetType()))
			}
		})
		cfg.Events.GroupFailed = func(groupID uint64, err error) { failedGroup.Store(groupID) }
		cfg.Events.HostFailed = func(error) { hostFailed.Store(true) }
	}})
	c.CreateGroup(g, 1, 2, 3)
	c.CreateGroup(other, 1, 2, 3)
	c.WaitLeaders([]uint64{g, other})
	if c.Leader(g) == victim {
		leader := uint64(victim%3 + 1)
		if err := c.Do("moving leadership off the victim", func(ctx context.Context) error {
			return c.Host(victim).TransferLeadership(ctx, g, leader)
		}); err != nil {
			t.Fatal(err)
		}
		c.WaitLeaders([]uint64{g})
	}
	propose(t, c, g, "before")

	// A read on the victim that cannot complete (its requests to the
	// leader are dropped) is waiting when the group fails.
	heal := c.Net.AddFilter(transport.DropType(pb.MsgReadIndex))
	defer heal()
	read := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		read <- c.Host(victim).ReadIndex(ctx, g)
	}()
	armed.Store(true)
	c.WaitFor("the victim's replica to fail", time.Minute, func() bool { return failedGroup.Load() == g })
	select {
	case err := <-read:
		if !errors.Is(err, multiraft.ErrGroupFailed) {
			t.Fatalf("the waiting read ended with %v, want ErrGroupFailed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read waiting on the failed group was never answered")
	}
	h := c.Host(victim)
	if err := h.Err(); err != nil || hostFailed.Load() {
		t.Fatalf("the host failed with its group: %v", err)
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
	c := integration.NewCluster(t, integration.ClusterConfig{Nodes: 3, Transport: integration.Memory, Configure: func(cfg *multiraft.Config) {
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
	c.WaitLeaders([]uint64{g})
	leader := c.Leader(g)
	lagging := leader%3 + 1
	heal := c.Net.AddFilter(transport.Isolate(lagging))
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
