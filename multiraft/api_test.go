package multiraft_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestNodeZeroInMembershipChange: node ID 0 is reserved; a membership
// change naming it is ErrInvalid (a voter on node 0 would cost a
// one-replica group its quorum for good).
func TestNodeZeroInMembershipChange(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1})
	const g = 1
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	var replicas map[multiraft.ReplicaID]multiraft.NodeID
	err := c.Do("adding a voter on node 0", func(ctx context.Context) (err error) {
		replicas, err = c.Host(1).ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.AddVoter, Node: 0})
		return err
	})
	if !errors.Is(err, multiraft.ErrInvalid) {
		t.Errorf("ChangeMembership(AddVoter, node 0) = %v, %v; want ErrInvalid (node 0 is reserved)", replicas, err)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, perr := c.Host(1).Propose(ctx, g, []byte("x"))
		t.Logf("a proposal afterwards: %v", perr)
	}
}

// TestValidateRefusesWhatRaftRefuses: settings raft would refuse (or panic
// on) when a group is made are refused by Validate, before anything is
// written.
func TestValidateRefusesWhatRaftRefuses(t *testing.T) {
	for name, change := range map[string]func(*multiraft.Config){
		"MaxInflightBytes below MaxSizePerMsg": func(c *multiraft.Config) { c.MaxInflightBytes = 512 << 10 },
		"HeartbeatTicks -1":                    func(c *multiraft.Config) { c.HeartbeatTicks = -1 },
		"MaxInflightMsgs -1":                   func(c *multiraft.Config) { c.MaxInflightMsgs = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			fs, net := vfs.NewMem(), transport.NewNetwork()
			cfg := hostConfig(fs, net, 1)
			change(&cfg)
			if err := cfg.Validate(); !errors.Is(err, multiraft.ErrInvalid) {
				t.Fatalf("Validate: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestRegistererAlreadyLabelledNode: a registerer that already labels its
// series node=... is refused with ErrInvalid and the way out (the host
// adds that label itself), not a panic or a misleading hint.
func TestRegistererAlreadyLabelledNode(t *testing.T) {
	cfg := hostConfig(vfs.NewMem(), transport.NewNetwork(), 1)
	cfg.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"node": "1"}, prometheus.NewRegistry())
	h, err := multiraft.NewHost(cfg)
	if err == nil {
		_ = h.Close()
		t.Fatal("NewHost took a registerer that already labels node")
	}
	_ = cfg.Transport.Close()
	if !errors.Is(err, multiraft.ErrInvalid) || !strings.Contains(err.Error(), "pass the registry itself") {
		t.Fatalf("NewHost on a registerer already labelled node: %v", err)
	}
}

// TestPeerCallErrorsAlikeOnBothTransports: a call on a peer that would be
// refused for bad arguments is ErrInvalid, and a call to node 0 too, over
// either transport: the answer never depends on which one an embedder
// tested with.
func TestPeerCallErrorsAlikeOnBothTransports(t *testing.T) {
	for _, kind := range []string{flotillatest.Memory, flotillatest.GRPC} {
		t.Run(kind, func(t *testing.T) {
			c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 2, Transport: kind})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := c.Host(1).CreateGroupOn(ctx, 2, 0, []multiraft.NodeID{1, 2})
			t.Logf("CreateGroupOn(node 2, group 0): %v", err)
			if !errors.Is(err, multiraft.ErrInvalid) {
				t.Errorf("CreateGroupOn(node 2, group 0) does not wrap ErrInvalid over %s", kind)
			}
			err = c.Host(1).CreateGroupOn(ctx, 0, 5, []multiraft.NodeID{1, 2})
			t.Logf("CreateGroupOn(node 0, ...): %v", err)
			if !errors.Is(err, multiraft.ErrInvalid) {
				t.Errorf("CreateGroupOn(node 0) does not wrap ErrInvalid over %s", kind)
			}
		})
	}
}

// TestPeerStoppedIsNotLocalStop: a failed peer's refusal is ErrPeer,
// never the caller's own ErrStopped.
func TestPeerStoppedIsNotLocalStop(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 2})
	c.CreateGroup(1, 1, 2)
	c.WaitLeaders([]multiraft.GroupID{1})
	c.FailSyncs(2)
	_ = c.Do("a write that fails node 2's disk", func(ctx context.Context) error {
		h := c.Host(c.Leader(1))
		if h != nil {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, _ = h.Propose(ctx, 1, []byte("x"))
		}
		return nil
	})
	c.TickUntil("node 2 to fail", time.Minute, func() bool { return c.Host(2).Err() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Host(1).CreateGroupOn(ctx, 2, 9, []multiraft.NodeID{1, 2})
	if errors.Is(err, multiraft.ErrStopped) || !errors.Is(err, multiraft.ErrPeer) {
		t.Errorf("CreateGroupOn on a failed peer: %v, want ErrPeer and not ErrStopped (the caller runs: %v)", err, c.Host(1).Err())
	}
}

// TestSameNodeTwiceInOneChange: one change naming a node twice is
// ErrInvalid (it would allot the node two replicas of the group).
func TestSameNodeTwiceInOneChange(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3})
	const g = 1
	c.CreateGroup(g, 1, 2)
	c.WaitLeaders([]multiraft.GroupID{g})
	var replicas map[multiraft.ReplicaID]multiraft.NodeID
	err := c.Do("adding node 3 twice", func(ctx context.Context) (err error) {
		replicas, err = c.Host(c.Leader(g)).ChangeMembership(ctx, g,
			multiraft.Change{Type: multiraft.AddLearner, Node: 3}, multiraft.Change{Type: multiraft.AddLearner, Node: 3})
		return err
	})
	if !errors.Is(err, multiraft.ErrInvalid) {
		t.Errorf("ChangeMembership(AddLearner 3, AddLearner 3) = %v, %v; want ErrInvalid", replicas, err)
	}
}
