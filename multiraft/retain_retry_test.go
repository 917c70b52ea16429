// Regression tests from a fourth review of the retained log: each test's
// comment tells its scenario as it failed before the fix.

package multiraft_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// busyTruncations counts the Debug lines truncateKept logs
// when the log writer refused its Truncate as busy.
type busyTruncations struct {
	n *atomic.Int64
	slog.Handler
}

func (h busyTruncations) Enabled(context.Context, slog.Level) bool { return true }

func (h busyTruncations) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "truncate" {
		return nil
	}
	busy := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" && strings.Contains(a.Value.String(), "queued") { // store.ErrBusy's text
			busy = true
		}
		if a.Key == "group" && a.Value.String() != "1" {
			busy = false
			return false
		}
		return true
	})
	if busy {
		h.n.Add(1)
	}
	return nil
}

func (h busyTruncations) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h busyTruncations) WithGroup(string) slog.Handler      { return h }

// TestBusyTruncationRetriedOnIdleGroup: a LogRetainer's retention moves
// (a partition's Trim) on a follower whose log writer is full at that
// moment: truncateKept's Truncate gets store.ErrBusy, logs it at Debug
// and returns without recording anything. Since the third round
// (1506ffd) nothing calls truncateKept again but the next apply
// (maybeSnapshot) or a pass with a snapshot report (reportSnapshots
// returns early without one): on an idle group, the very case retention
// by age trims, the entries below RetainFrom stay on that replica's disk
// until the partition takes another record. (The second round's message
// says a truncation a busy log writer refused is taken up again; its
// per-pass retry went with the third round's fix.)
func TestBusyTruncationRetriedOnIdleGroup(t *testing.T) {
	var busy atomic.Int64
	const slow = 3
	c, sm := keepClusterByGroup(t, 3, func(cfg *multiraft.Config) {
		cfg.SnapshotEntries, cfg.LogTailEntries = 1000, 1
		multiraft.SetLogQueueItems(cfg, 4)
		if cfg.NodeID == slow {
			cfg.Logger = slog.New(busyTruncations{n: &busy, Handler: slog.DiscardHandler})
		}
	}, nil)
	const g = 1
	load := []multiraft.GroupID{2, 3, 4, 5}
	c.CreateGroup(g, 1, 2, 3)
	for _, lg := range load {
		c.CreateGroup(lg, 1, 2, 3)
	}
	c.WaitLeaders(append([]multiraft.GroupID{g}, load...))
	for _, lg := range append([]multiraft.GroupID{g}, load...) {
		if c.Leader(lg) == slow {
			if err := c.Do("a transfer off node 3", func(ctx context.Context) error {
				return c.Host(slow).TransferLeadership(ctx, lg, 1)
			}); err != nil {
				t.Fatal(err)
			}
			c.WaitFor("node 3 to give up leading", 30*time.Second, func() bool { l := c.Leader(lg); return l != 0 && l != slow })
		}
	}
	for i := range 30 {
		propose(t, c, g, fmt.Sprintf("a%d", i))
	}
	leader := c.Leader(g)
	c.WaitFor("node 3 to apply group 1", 30*time.Second, func() bool {
		s := sm(slow, g)
		return s != nil && s.last() == sm(leader, g).last()
	})
	base := sm(leader, g).last()
	keep := base - 3

	// Node 3 gets the entry that moves the retention (and writes it
	// durably), but not the commit index that covers it.
	heal := c.Net.AddFilter(func(from, to transport.NodeID, e transport.Envelope) transport.Verdict {
		if from == uint64(leader) && to == slow && e.GroupID == uint64(g) && e.Message.GetCommit() > base {
			return transport.Verdict{Drop: true}
		}
		return transport.Deliver
	})
	defer heal()
	propose(t, c, g, fmt.Sprintf("keep:%d", keep))
	trim := sm(leader, g).last()
	c.WaitFor("node 3 to hold the trim durably", 30*time.Second, func() bool {
		st, err := c.Host(leader).Status(g)
		if err != nil {
			return false
		}
		for r, p := range st.Progress {
			if st.Replicas[r] == slow && p.Match >= trim {
				return true
			}
		}
		return false
	})
	if sm(slow, g).RetainFrom() == keep {
		t.Fatal("node 3 applied the trim before the filter held its commit back: the premise of the test did not hold")
	}

	// Node 3's log writer fills up: its syncs are held, other groups write.
	c.HoldSyncs(slow)
	released := false
	defer func() {
		if !released {
			c.ReleaseSyncs(slow)
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, lg := range load {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				if l := c.Leader(lg); l != 0 {
					_, _ = c.Host(l).Propose(ctx, lg, make([]byte, 64))
				}
				cancel()
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	c.TickUntil("node 3's log writer to refuse work, its queue full", time.Minute, func() bool {
		return c.Metric(slow, "flotilla_store_log_queue_rejected_total") > 0 && c.Metric(slow, "flotilla_store_log_queue_items") >= 4
	})

	// The commit reaches node 3, which applies the trim with its writer full.
	heal()
	c.TickUntil("node 3 to apply the trim", time.Minute, func() bool { return sm(slow, g).RetainFrom() == keep })
	// The state machine shows the trim once its apply batch commits; the
	// worker truncates just after, in the same pass.
	c.WaitFor("node 3's log writer to refuse the truncation after the trim (the premise of the test)", 30*time.Second, func() bool {
		return busy.Load() > 0
	})
	c.ReleaseSyncs(slow)
	released = true
	stopLoad()

	// Group 1 takes nothing more: it is idle, like a partition whose
	// records age out.
	c.WaitFor("the leader to free the entries below the retention", 30*time.Second, func() bool {
		return sm(leader, g).lowest(t) >= keep
	})
	const ticks = 50 // five election timeouts
	for range ticks {
		if sm(slow, g).lowest(t) >= keep {
			return
		}
		c.Step()
	}
	if low := sm(slow, g).lowest(t); low < keep {
		t.Fatalf("node 3 still holds entries from %d, below the retention %d, %d ticks after its busy log writer refused the truncation (group 1 idle)",
			low, keep, ticks)
	}
}
