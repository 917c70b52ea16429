package multiraft_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestErrors walks the host's exported error paths: each error wraps the
// sentinel errors.go documents for it and names what it is about.
func TestErrors(t *testing.T) {
	type errCase struct {
		name     string
		err      error
		sentinel error
		mentions string // a word the message must hold ("" for none)
	}
	check := func(t *testing.T, cases []errCase) {
		t.Helper()
		for _, c := range cases {
			if !errors.Is(c.err, c.sentinel) {
				t.Errorf("%s: %v, want it to wrap %v", c.name, c.err, c.sentinel)
			} else if !strings.Contains(c.err.Error(), c.mentions) {
				t.Errorf("%s: %q does not mention %q", c.name, c.err, c.mentions)
			}
		}
	}

	t.Run("config", func(t *testing.T) {
		fs := vfs.NewMem()
		net := transport.NewNetwork()
		base := func(node multiraft.NodeID) multiraft.Config { return hostConfig(fs, net, node) }
		newHost := func(cfg multiraft.Config) error {
			h, err := multiraft.NewHost(cfg)
			if err == nil {
				return h.Close()
			}
			_ = cfg.Transport.Close()
			return err
		}
		with := func(change func(*multiraft.Config)) error {
			cfg := base(1)
			change(&cfg)
			return newHost(cfg)
		}
		running, err := multiraft.NewHost(base(1))
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		cfg2 := base(2)
		cfg2.Dir, cfg2.Registerer = "data2", reg
		second, err := multiraft.NewHost(cfg2)
		if err != nil {
			t.Fatal(err)
		}
		cfg3 := base(3)
		cfg3.Dir, cfg3.Registerer, cfg3.NodeID = "data3", reg, 2
		cfg3.Transport = transport.NewMemory(transport.NewNetwork(), 2, transport.Config{})
		check(t, []errCase{
			{"no node ID", with(func(c *multiraft.Config) { c.NodeID = 0 }), multiraft.ErrInvalid, "NodeID"},
			{"no cluster ID", with(func(c *multiraft.Config) { c.ClusterID = 0 }), multiraft.ErrInvalid, "ClusterID"},
			{"no dir", with(func(c *multiraft.Config) { c.Dir = "" }), multiraft.ErrInvalid, "Dir"},
			{"no state machine", with(func(c *multiraft.Config) { c.StateMachine = nil }), multiraft.ErrInvalid, "StateMachine"},
			{"negative workers", with(func(c *multiraft.Config) { c.Workers = -1 }), multiraft.ErrInvalid, "Workers"},
			{"negative tick", with(func(c *multiraft.Config) { c.TickInterval = -1 }), multiraft.ErrInvalid, "TickInterval"},
			{"election within heartbeat", with(func(c *multiraft.Config) { c.ElectionTicks = 1 }), multiraft.ErrInvalid, "ElectionTicks"},
			{"data dir in use", newHost(base(1)), multiraft.ErrDataDir, "used by another running node"},
			{"a registry twice", newHost(cfg3), multiraft.ErrInvalid, "node 2"},
		})
		_ = second.Close()
		_ = running.Close()
		check(t, []errCase{
			{"another node's data", with(func(c *multiraft.Config) { c.NodeID = 9 }), multiraft.ErrDataDir, "node 1 of cluster 1"},
		})
	})

	t.Run("calls", func(t *testing.T) {
		c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3, Transport: flotillatest.Memory, Configure: func(cfg *multiraft.Config) {
			cfg.MaxProposalBytes = 1 << 10
		}})
		const g = 1
		c.CreateGroup(g, 1, 2)
		c.WaitLeaders([]multiraft.GroupID{g})
		leader := c.Leader(g)
		follower := 3 - leader
		h, f := c.Host(leader), c.Host(follower)
		ctx := context.Background()
		_, proposeUnknown := h.Propose(ctx, 99, []byte("x"))
		_, proposeLarge := h.Propose(ctx, g, make([]byte, 2<<10))
		_, proposeFollower := f.Propose(ctx, g, []byte("x"))
		_, changeNone := h.ChangeMembership(ctx, g)
		_, changeNotMember := h.ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: 3})
		_, statusUnknown := h.Status(99)
		check(t, []errCase{
			{"CreateGroup(0)", c.Host(3).CreateGroup(0, []multiraft.NodeID{3}), multiraft.ErrInvalid, "group ID 0"},
			{"CreateGroup without this node", c.Host(3).CreateGroup(5, []multiraft.NodeID{1, 2}), multiraft.ErrInvalid, "node 3"},
			{"CreateGroup twice", h.CreateGroup(g, []multiraft.NodeID{1, 2}), multiraft.ErrGroupExists, "group 1"},
			{"JoinGroup(g, 0)", c.Host(3).JoinGroup(g, 0), multiraft.ErrInvalid, "replica ID 0"},
			{"Propose to an unknown group", proposeUnknown, multiraft.ErrGroupNotFound, "group 99"},
			{"Propose too large", proposeLarge, multiraft.ErrTooLarge, "limit 1024"},
			{"Propose on a follower", proposeFollower, multiraft.ErrNotLeader, "group 1"},
			{"ReadIndex of an unknown group", h.ReadIndex(ctx, 99), multiraft.ErrGroupNotFound, "group 99"},
			{"TransferLeadership of an unknown group", h.TransferLeadership(ctx, 99, 2), multiraft.ErrGroupNotFound, "group 99"},
			{"TransferLeadership on a follower", f.TransferLeadership(ctx, g, follower), multiraft.ErrNotLeader, "group 1"},
			{"ChangeMembership without changes", changeNone, multiraft.ErrInvalid, "no membership change"},
			{"removing a non-member", changeNotMember, multiraft.ErrInvalid, "node 3"},
			{"Status of an unknown group", statusUnknown, multiraft.ErrGroupNotFound, "group 99"},
			{"SetSystemGroup of an unknown group", h.SetSystemGroup(99, true), multiraft.ErrGroupNotFound, "group 99"},
			{"RemoveGroup of an unknown group", h.RemoveGroup(ctx, 99), multiraft.ErrGroupNotFound, "group 99"},
		})

		// A transfer to a node without a replica is refused by the worker.
		var transferNoReplica error
		_ = c.Do("a transfer to a node without a replica", func(ctx context.Context) error {
			transferNoReplica = h.TransferLeadership(ctx, g, 3)
			return nil
		})
		// A read with no leader known fails at once, as Propose does.
		c.Crash(leader, rand.New(rand.NewPCG(1, 2)))
		c.WaitFor("the follower to lose its leader", time.Minute, func() bool {
			st, err := f.Status(g)
			return err == nil && st.Leader == 0
		})
		readCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		start := time.Now()
		readNoLeader := f.ReadIndex(readCtx, g)
		if waited := time.Since(start); waited > 10*time.Second {
			t.Errorf("a read with no leader waited %s", waited)
		}
		check(t, []errCase{
			{"TransferLeadership to a node without a replica", transferNoReplica, multiraft.ErrInvalid, "node 3"},
			{"ReadIndex with no leader", readNoLeader, multiraft.ErrNotLeader, "leader unknown"},
		})

		// A removed replica's ID is not reused, and the error says what to do.
		if err := c.Do("removing the follower's replica", func(ctx context.Context) error { return f.RemoveGroup(ctx, g) }); err != nil {
			t.Fatal(err)
		}
		check(t, []errCase{
			{"CreateGroup after RemoveGroup", f.CreateGroup(g, []multiraft.NodeID{1, 2}), multiraft.ErrInvalid, "ChangeMembership"},
		})

		// A closed host refuses everything with ErrStopped.
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		_, proposeClosed := f.Propose(ctx, g, []byte("x"))
		_, changeClosed := f.ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.AddVoter, Node: 3})
		check(t, []errCase{
			{"Propose on a closed host", proposeClosed, multiraft.ErrStopped, ""},
			{"ReadIndex on a closed host", f.ReadIndex(ctx, g), multiraft.ErrStopped, ""},
			{"TransferLeadership on a closed host", f.TransferLeadership(ctx, g, 1), multiraft.ErrStopped, ""},
			{"ChangeMembership on a closed host", changeClosed, multiraft.ErrStopped, ""},
			{"CreateGroup on a closed host", f.CreateGroup(8, []multiraft.NodeID{follower}), multiraft.ErrStopped, ""},
			{"RemoveGroup on a closed host", f.RemoveGroup(ctx, g), multiraft.ErrStopped, ""},
		})
	})
}
