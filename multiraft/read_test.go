package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// counterSM counts the commands it applied. It has no lock: Apply and
// the functions Read and StaleRead run touch it only on the group's
// worker (the race detector would see any other access).
type counterSM struct{ n int }

func (s *counterSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	s.n += len(cmds)
	return make([][]byte, len(cmds)), nil
}

func (s *counterSM) Snapshot(w io.Writer) error {
	_, err := fmt.Fprintf(w, "%d", s.n)
	return err
}

func (s *counterSM) Restore(r io.Reader) error {
	_, err := fmt.Fscan(r, &s.n)
	return err
}

// counters is a cluster of counterSMs, by node.
type counters struct {
	mu  sync.Mutex
	sms map[multiraft.NodeID]*counterSM
}

func newCounterCluster(t *testing.T, nodes int) (*flotillatest.Cluster, *counters) {
	cs := &counters{sms: map[multiraft.NodeID]*counterSM{}}
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: nodes,
		StateMachine: func(node multiraft.NodeID, _ multiraft.GroupID) multiraft.StateMachine {
			cs.mu.Lock()
			defer cs.mu.Unlock()
			sm := &counterSM{}
			cs.sms[node] = sm // one group per cluster: the last made is the live one
			return sm
		}})
	return c, cs
}

func (cs *counters) on(node multiraft.NodeID) *counterSM {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.sms[node]
}

// TestReadLinearizable: no read, on the leader or a follower, sees a
// count older than the proposals acknowledged before it started, while
// proposals keep applying; stale reads run beside them. Random leader transfers move the leader under the readers.
func TestReadLinearizable(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	c, cs := newCounterCluster(t, 3)
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})

	var acked atomic.Int64
	var reads, stale atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const writes = 300
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for acked.Load() < writes && ctx.Err() == nil {
				h := c.Host(c.Leader(g))
				if h == nil {
					continue
				}
				// A failed write (no leader here, ambiguous) may still
				// apply: the count may run ahead of the acks, never behind.
				if _, err := h.Propose(ctx, g, []byte("x")); err == nil {
					acked.Add(1)
				}
			}
		})
	}
	for r := 0; r < 4; r++ {
		node := multiraft.NodeID(r%3 + 1)
		wg.Go(func() {
			sm := cs.on(node)
			for acked.Load() < writes && ctx.Err() == nil {
				before := acked.Load()
				var seen int
				err := c.Host(node).Read(ctx, g, func() error { seen = sm.n; return nil })
				var nl *multiraft.NotLeaderError
				switch {
				case ctx.Err() != nil:
					return // the writes are done
				case errors.As(err, &nl), errors.Is(err, multiraft.ErrBusy):
					continue
				case err != nil:
					t.Errorf("read on node %d: %v", node, err)
					return
				case int64(seen) < before:
					t.Errorf("read on node %d saw %d commands, %d were acknowledged before it began", node, seen, before)
					return
				}
				reads.Add(1)
				if err := c.Host(node).StaleRead(ctx, g, func() error { seen = sm.n; return nil }); err != nil && ctx.Err() == nil {
					t.Errorf("stale read on node %d: %v", node, err)
					return
				}
				stale.Add(1)
			}
		})
	}
	transfers := 0
	c.WaitFor("the writes and reads", 2*time.Minute, func() bool {
		if acked.Load() > int64(transfers+1)*writes/4 && transfers < 3 {
			transfers++
			to := multiraft.NodeID(rng.IntN(3) + 1)
			if h := c.Host(c.Leader(g)); h != nil {
				wg.Go(func() { _ = h.TransferLeadership(ctx, g, to) })
			}
		}
		return acked.Load() >= writes
	})
	cancel()
	c.WaitGroup("the readers and writers to stop", time.Minute, &wg)
	if reads.Load() == 0 || stale.Load() == 0 {
		t.Fatalf("%d reads and %d stale reads ran: the test read nothing", reads.Load(), stale.Load())
	}
	t.Logf("%d writes, %d reads, %d stale reads", acked.Load(), reads.Load(), stale.Load())
}

// TestStaleReadCutOff: a replica cut off from its group still serves
// stale reads of what it applied, while a linearizable read there waits
// (and fails with its caller's deadline).
func TestStaleReadCutOff(t *testing.T) {
	c, cs := newCounterCluster(t, 3)
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for range 5 {
		propose(t, c, g, "x")
	}
	follower := multiraft.NodeID(1)
	if follower == c.Leader(g) {
		follower = 2
	}
	waitApplied5 := func() bool {
		var n int
		err := c.Host(follower).StaleRead(t.Context(), g, func() error { n = cs.on(follower).n; return nil })
		return err == nil && n == 5
	}
	c.WaitFor("the follower to apply 5 commands", time.Minute, waitApplied5)
	heal := c.Isolate(follower)
	defer heal()
	for range 3 {
		propose(t, c, g, "y")
	}
	var n int
	if err := c.Host(follower).StaleRead(t.Context(), g, func() error { n = cs.on(follower).n; return nil }); err != nil || n != 5 {
		t.Fatalf("stale read on the cut-off follower: %d commands, %v; want 5, nil", n, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	ran := false
	err := c.Host(follower).Read(ctx, g, func() error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("a linearizable read on a cut-off follower answered (%v, ran %v)", err, ran)
	}
}

// TestReadErrors: Read's function's error and panic are the caller's,
// and the group goes on; a nil function is ErrInvalid.
func TestReadErrors(t *testing.T) {
	c, _ := newCounterCluster(t, 1)
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	h := c.Host(1)
	mine := errors.New("mine")
	if err := h.Read(t.Context(), g, func() error { return mine }); !errors.Is(err, mine) {
		t.Fatalf("Read returned %v, want the function's error", err)
	}
	if err := h.StaleRead(t.Context(), g, func() error { panic("boom") }); err == nil {
		t.Fatal("a panicking read function returned no error")
	}
	if err := h.Read(t.Context(), g, nil); !errors.Is(err, multiraft.ErrInvalid) {
		t.Fatalf("Read(nil) = %v, want ErrInvalid", err)
	}
	if err := h.Read(t.Context(), 99, func() error { return nil }); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("Read of an unknown group = %v, want ErrGroupNotFound", err)
	}
	propose(t, c, g, "after") // the group goes on
}
