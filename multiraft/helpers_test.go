package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// The host's own tests drive whole clusters (flotillatest.Cluster) through
// the public API, with the faults only test hooks (export_test.go) can
// inject.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// propose proposes data to a group's leader, whoever it is, while moving
// the clock.
func propose(t *testing.T, c *flotillatest.Cluster, g multiraft.GroupID, data string) {
	t.Helper()
	err := c.Do("a proposal", func(ctx context.Context) error {
		for ctx.Err() == nil {
			leader := c.Leader(g)
			if leader == 0 {
				continue
			}
			_, err := c.Host(leader).Propose(ctx, g, []byte(data))
			if !errors.Is(err, multiraft.ErrNotLeader) && !errors.Is(err, multiraft.ErrAmbiguous) {
				return err
			}
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatalf("propose %q to group %d: %v", data, g, err)
	}
}

// change makes a membership change on a group's leader while moving the
// clock, and returns the group's replicas.
func change(t *testing.T, c *flotillatest.Cluster, g multiraft.GroupID, changes ...multiraft.Change) map[multiraft.ReplicaID]multiraft.NodeID {
	t.Helper()
	var replicas map[multiraft.ReplicaID]multiraft.NodeID
	err := c.Do(fmt.Sprintf("membership change %v", changes), func(ctx context.Context) (err error) {
		replicas, err = c.Host(c.Leader(g)).ChangeMembership(ctx, g, changes...)
		return err
	})
	if err != nil {
		t.Fatalf("membership change %v: %v", changes, err)
	}
	return replicas
}

// waitApplied waits until a node has applied n commands of a group.
func waitApplied(t *testing.T, c *flotillatest.Cluster, g multiraft.GroupID, node multiraft.NodeID, n int) {
	t.Helper()
	c.WaitFor(fmt.Sprintf("node %d to apply %d commands of group %d", node, n, g), time.Minute, func() bool {
		sm := c.SM(node, g)
		return sm != nil && sm.Len() == n
	})
}

// hostConfig is a host of node on fs and net, with the kit's LogSM, a
// manual clock and a silent logger.
func hostConfig(fs vfs.FS, net *transport.Network, node multiraft.NodeID) multiraft.Config {
	cfg := multiraft.DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, node, "data", fs
	cfg.Transport = transport.NewMemory(net, uint64(node), transport.Config{})
	cfg.StateMachine = func(multiraft.GroupID) multiraft.StateMachine { return &flotillatest.LogSM{} }
	cfg.Clock = multiraft.NewManualClock(time.Unix(1_700_000_000, 0))
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}
