package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/multiraft"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestElectAndReplicate: 3 hosts, many groups: every group elects a
// leader; proposals to every group through its leader are acknowledged;
// every replica applies the same sequence; followers refuse proposals with
// the leader's identity.
func TestElectAndReplicate(t *testing.T) {
	groups := 1000
	if testing.Short() || raceEnabled {
		groups = 100 // the race detector makes each host pass ~10x slower
	}
	c := NewCluster(t, ClusterConfig{Nodes: 3})
	ids := c.CreateGroups(groups)

	const perGroup = 5
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for _, g := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leader := c.Host(c.Leader(g))
			for i := 0; i < perGroup; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := leader.Propose(ctx, g, fmt.Appendf(nil, "g%d-cmd%d", g, i))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("group %d proposal %d: %w", g, i, err)
					return
				}
				if res.Index == 0 || len(res.Value) != 8 {
					errs <- fmt.Errorf("group %d proposal %d: result %+v", g, i, res)
					return
				}
			}
		}()
	}
	// Proposals commit without ticks, but a lost message is only resent on
	// a heartbeat: keep time moving while they run.
	c.WaitGroup("every proposal", 60*time.Second, &wg)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.WaitFor("every replica to apply every command", 60*time.Second, func() bool {
		for _, g := range ids {
			for _, n := range c.Nodes() {
				if c.SM(n, g).Len() != perGroup {
					return false
				}
			}
		}
		return true
	})
	for _, g := range ids {
		want := c.SM(1, g).Log()
		for i, cmd := range want {
			if !bytes.Equal(cmd, fmt.Appendf(nil, "g%d-cmd%d", g, i)) {
				t.Fatalf("group %d: command %d is %q", g, i, cmd)
			}
		}
		for _, n := range []NodeID{2, 3} {
			if got := c.SM(n, g).Log(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("group %d: node %d applied %q, node 1 %q", g, n, got, want)
			}
		}
	}
	// A follower refuses at once and names the leader.
	g := ids[0]
	leader := c.Leader(g)
	st, err := c.Host(leader).Status(g)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the leader's view of its followers", 30*time.Second, func() bool {
		st, _ = c.Host(leader).Status(g)
		for _, pr := range st.Progress {
			if pr.Match != st.Commit {
				return false
			}
		}
		return len(st.Progress) == 3
	})
	if st.Role != multiraft.RoleLeader || st.Leader != leader || len(st.Replicas) != 3 || st.Applied != st.Commit {
		t.Fatalf("leader status %+v", st)
	}
	follower := NodeID(1)
	if leader == 1 {
		follower = 2
	}
	_, err = c.Host(follower).Propose(context.Background(), g, []byte("x"))
	var nle *multiraft.NotLeaderError
	if !errors.As(err, &nle) || nle.Leader != leader {
		t.Fatalf("proposal to a follower: %v, want NotLeaderError naming node %d", err, leader)
	}
	if _, err := c.Host(leader).Propose(context.Background(), 9999, []byte("x")); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("proposal to an unknown group: %v", err)
	}
	if _, err := c.Host(leader).Propose(context.Background(), g, make([]byte, 2<<20)); !errors.Is(err, multiraft.ErrTooLarge) {
		t.Fatalf("oversized proposal: %v", err)
	}
}
