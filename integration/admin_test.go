package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestCreateGroupThroughAdmin: one host creates a group's replicas on
// every member through the transport's admin call (twice: creating is
// idempotent); the group elects and serves; a removal through the admin
// call leaves the other replicas serving; a call to a node that is not
// there fails as unreachable.
func TestCreateGroupThroughAdmin(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := c.Host(1)
	for range 2 {
		for _, n := range []NodeID{1, 2, 3} {
			if err := h.CreateGroupOn(ctx, n, 42, []NodeID{1, 2, 3}); err != nil {
				t.Fatalf("create on node %d: %v", n, err)
			}
		}
	}
	for _, n := range []NodeID{2, 3} {
		if _, err := c.Host(n).Status(42); err != nil {
			t.Fatalf("node %d has no replica: %v", n, err)
		}
	}
	c.WaitLeaders([]multiraft.GroupID{42})
	err := c.Do("a proposal", func(ctx context.Context) error {
		_, err := c.Host(c.Leader(42)).Propose(ctx, 42, []byte("hello"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CreateGroupOn(ctx, 9, 43, []NodeID{1, 9}); !errors.Is(err, transport.ErrUnknownPeer) {
		t.Fatalf("create on an unknown node: %v", err)
	}
	if err := h.CreateGroupOn(ctx, 2, 44, []NodeID{1, 3}); err == nil {
		t.Fatal("node 2 created a replica of a group it is not a member of")
	}
	follower := NodeID(1)
	if c.Leader(42) == 1 {
		follower = 2
	}
	if err := h.RemoveGroupOn(ctx, follower, 42); err != nil {
		t.Fatalf("remove on node %d: %v", follower, err)
	}
	if _, err := c.Host(follower).Status(42); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("node %d still has the group: %v", follower, err)
	}
}
