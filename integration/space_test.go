package integration

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// countingHandler counts the log records whose message contains a string.
type countingHandler struct {
	slog.Handler
	match string
	n     *atomic.Int32
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.n.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestSpaceAlarm: below MinFreeDiskBytes a host refuses new proposals and
// replicas at once (ErrNoSpace), says so once, and keeps serving reads,
// raft traffic, membership changes and removals; once space returns it
// takes writes again by itself.
func TestSpaceAlarm(t *testing.T) {
	const min = 64 << 20
	var alarms [4]atomic.Int32
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.MinFreeDiskBytes = min
		cfg.Logger = slog.New(countingHandler{match: "disk space alarm:", n: &alarms[cfg.NodeID]})
	}})
	const g, other, local = 1, 2, 3
	c.CreateGroup(g, 1, 2, 3)
	c.CreateGroup(other, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g, other})
	full := c.Leader(g)
	c.CreateGroup(local, full)
	if c.Leader(other) == full {
		to := full%3 + 1
		if err := c.Do("moving the other group's leader", func(ctx context.Context) error {
			return c.Host(full).TransferLeadership(ctx, other, to)
		}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitLeaders([]multiraft.GroupID{g, other, local})
	h := c.Host(full)

	c.SetFreeSpace(full, min-1)
	c.WaitFor("the space alarm", 30*time.Second, func() bool { return c.Metric(full, "flotilla_host_disk_space_alarm") == 1 })
	if _, err := h.Propose(context.Background(), g, []byte("x")); !errors.Is(err, multiraft.ErrNoSpace) {
		t.Fatalf("proposal on a full disk: %v, want ErrNoSpace", err)
	}
	if err := h.CreateGroup(99, []NodeID{full}); !errors.Is(err, multiraft.ErrNoSpace) {
		t.Fatalf("group creation on a full disk: %v, want ErrNoSpace", err)
	}
	if err := h.JoinGroup(98, 4); !errors.Is(err, multiraft.ErrNoSpace) {
		t.Fatalf("joining a group on a full disk: %v, want ErrNoSpace", err)
	}
	// What frees space, or costs none, goes on.
	readWithTime(t, c, full, g)
	if _, err := proposeWithTime(c, c.Leader(other), other, []byte("replicated to the full host")); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, other, []NodeID{full}, 1)
	changeWithTime(t, c, full, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: full%3 + 1})
	if err := c.Do("removing a group", func(ctx context.Context) error { return h.RemoveGroup(ctx, local) }); err != nil {
		t.Fatal(err)
	}
	// Many checks later, still one line.
	ticks := 0
	c.WaitFor("20 more checks", time.Minute, func() bool { ticks++; return ticks >= 40 })
	if n := alarms[full].Load(); n != 1 {
		t.Fatalf("the alarm was logged %d times, want once", n)
	}

	// Between the threshold and the margin above it: still refusing.
	c.SetFreeSpace(full, min+min/16)
	ticks = 0
	c.WaitFor("a few checks", time.Minute, func() bool { ticks++; return ticks >= 10 })
	if c.Metric(full, "flotilla_host_disk_space_alarm") != 1 {
		t.Fatal("the alarm cleared without its margin: it would flap")
	}
	c.SetFreeSpace(full, 1<<30)
	c.WaitFor("the alarm to clear", 30*time.Second, func() bool { return c.Metric(full, "flotilla_host_disk_space_alarm") == 0 })
	if _, err := proposeWithTime(c, full, g, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := c.Metric(full, "flotilla_host_disk_free_bytes"); got != 1<<30 {
		t.Fatalf("free bytes gauge %v", got)
	}
}

// TestSpaceAlarmOnENOSPC: a disk the probe cannot read (or a quota it does
// not see) trips the alarm by the first write that fails for lack of
// space: Pebble's flushes fail and are retried in the background, counted
// but logged only now and then, and the host refuses new proposals instead
// of letting them hang; it takes them again once writes succeed. An
// ENOSPC the WAL cannot get past still stops the host.
func TestSpaceAlarmOnENOSPC(t *testing.T) {
	var bgErrors [4]atomic.Int32
	var failed [4]atomic.Bool
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		node := cfg.NodeID
		cfg.MemTableSize = 256 << 10 // flushes soon
		cfg.Logger = slog.New(countingHandler{match: "pebble background error", n: &bgErrors[node]})
		cfg.Events.HostFailed = func(error) { failed[node].Store(true) }
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	full := c.Leader(g)
	c.NoSpace(full, ".sst")
	for i := 0; c.Metric(full, "flotilla_host_disk_space_alarm") == 0; i++ {
		if i == 200 {
			t.Fatal("200 proposals of 16 KiB and no flush hit the full disk")
		}
		if _, err := proposeWithTime(c, full, g, make([]byte, 16<<10)); err != nil && !errors.Is(err, multiraft.ErrNoSpace) {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	if _, err := c.Host(full).Propose(context.Background(), g, []byte("x")); !errors.Is(err, multiraft.ErrNoSpace) {
		t.Fatalf("proposal after ENOSPC: %v, want ErrNoSpace", err)
	}
	c.WaitFor("pebble to retry its flush a few times", time.Minute, func() bool {
		return c.Metric(full, "flotilla_store_pebble_background_errors_total") >= 3
	})
	if n, logged := c.Metric(full, "flotilla_store_pebble_background_errors_total"), bgErrors[full].Load(); logged > 2 {
		t.Fatalf("%d of %v background errors logged in a few seconds", logged, n)
	}

	c.NoSpace(full, "")
	c.WaitFor("the alarm to clear", time.Minute, func() bool { return c.Metric(full, "flotilla_host_disk_space_alarm") == 0 })
	if _, err := proposeWithTime(c, full, g, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if failed[full].Load() {
		t.Fatal("a full disk under the flushes failed the host")
	}

	c.NoSpace(full, ".log")
	_, err := proposeWithTime(c, full, g, make([]byte, 64<<10))
	if err == nil {
		t.Fatal("a proposal was acknowledged by a host whose WAL cannot be written")
	}
	c.WaitFor("the host to stop", time.Minute, func() bool { return c.Host(full).Err() != nil })
	if !failed[full].Load() {
		t.Fatal("HostFailed not called")
	}
}

// TestSpaceAlarmDisabled: with MinFreeDiskBytes negative the alarm is off:
// flushes that fail for lack of space neither trip it nor refuse a
// proposal (the WAL still takes them), and the host goes on once space
// returns.
func TestSpaceAlarmDisabled(t *testing.T) {
	c := NewCluster(t, ClusterConfig{Nodes: 3, Configure: func(cfg *multiraft.Config) {
		cfg.MemTableSize = 256 << 10 // flushes soon
		cfg.MinFreeDiskBytes = -1
	}})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	full := c.Leader(g)
	c.NoSpace(full, ".sst")
	for i := 0; c.Metric(full, "flotilla_store_pebble_background_errors_total") == 0; i++ {
		if i == 200 {
			t.Fatal("200 proposals of 16 KiB and no flush hit the full disk")
		}
		if _, err := proposeWithTime(c, full, g, make([]byte, 16<<10)); err != nil {
			t.Fatalf("proposal %d with the alarm off: %v", i, err)
		}
	}
	if got := c.Metric(full, "flotilla_host_disk_space_alarm"); got != 0 {
		t.Fatalf("the disabled alarm tripped: %v", got)
	}
	c.NoSpace(full, "")
	if _, err := proposeWithTime(c, full, g, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := c.Host(full).Err(); err != nil {
		t.Fatal(err)
	}
}
