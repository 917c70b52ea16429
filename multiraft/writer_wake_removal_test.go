package multiraft

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/transport"
)

// wakeSM is an in-memory Snapshotter whose writes wait on hold (if set).
type wakeSM struct {
	mu       sync.Mutex
	n        int
	hold     chan struct{}
	prepared chan struct{} // signalled at each PrepareSnapshot
}

func (s *wakeSM) Apply(cmds []Command) ([][]byte, error) {
	s.mu.Lock()
	s.n += len(cmds)
	s.mu.Unlock()
	return make([][]byte, len(cmds)), nil
}
func (s *wakeSM) Snapshot(w io.Writer) error { _, err := w.Write([]byte{1}); return err }
func (s *wakeSM) Restore(r io.Reader) error  { _, err := io.ReadAll(r); return err }
func (s *wakeSM) PrepareSnapshot(SnapshotMeta) (func(io.Writer) error, error) {
	select {
	case s.prepared <- struct{}{}:
	default:
	}
	return func(w io.Writer) error {
		if s.hold != nil {
			<-s.hold
		}
		_, err := w.Write([]byte{1})
		return err
	}, nil
}

// TestWriterWakeNotLostToRemoval (from a review): a writer slot frees
// and wakes a queued group (3) while the group is being removed, past the
// point where removeGroup used to hand a wake on and before it left the
// host's groups. Its pass then finds no group, and the groups queued
// behind it (4) waited with a slot free: their Snapshot calls hung. The
// removal is held there by the liveness lock, which it takes in
// wakeFollowers (group 3 leads).
func TestWriterWakeNotLostToRemoval(t *testing.T) {
	hold1, hold2 := make(chan struct{}), make(chan struct{})
	sms := map[GroupID]*wakeSM{}
	for g := GroupID(1); g <= 4; g++ {
		sms[g] = &wakeSM{prepared: make(chan struct{}, 8)}
	}
	sms[1].hold, sms[2].hold = hold1, hold2

	net := transport.NewNetwork()
	cfg := DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, 1, "data", vfs.NewMem()
	cfg.TickInterval = 10 * time.Millisecond
	cfg.SnapshotEntries = 1 << 40
	cfg.Transport = transport.NewMemory(net, 1, transport.Config{})
	cfg.StateMachine = func(g GroupID) StateMachine { return sms[g] }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	defer close(hold2)
	release1 := sync.OnceFunc(func() { close(hold1) })
	defer release1()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for g := GroupID(1); g <= 4; g++ {
		if err := h.CreateGroup(g, []NodeID{1}); err != nil {
			t.Fatal(err)
		}
	}
	for g := GroupID(1); g <= 4; g++ {
		await.Until(t, 30*time.Second, "a serving leader", func() bool { st, err := h.Status(g); return err == nil && st.Serving })
		if _, err := h.Propose(ctx, g, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	snap := func(g GroupID) <-chan error {
		d := make(chan error, 1)
		go func() { _, err := h.Snapshot(ctx, g); d <- err }()
		return d
	}
	queued := func(n int) func() bool {
		return func() bool {
			h.writers.Lock()
			defer h.writers.Unlock()
			return len(h.writers.waiting) == n
		}
	}
	d1, _ := snap(1), snap(2)
	<-sms[1].prepared
	<-sms[2].prepared
	d3 := snap(3)
	await.Until(t, 30*time.Second, "group 3 queued for a writer slot", queued(1))
	d4 := snap(4)
	await.Until(t, 30*time.Second, "group 4 queued behind it", queued(2))

	g3 := h.group(3)
	h.live.mu.Lock() // removeGroup of group 3 (a leader) stops in wakeFollowers, past its Swap
	unlock := sync.OnceFunc(h.live.mu.Unlock)
	defer unlock()
	removed := make(chan error, 1)
	go func() { removed <- h.RemoveGroup(ctx, 3) }()
	await.Until(t, 30*time.Second, "the removal under way", func() bool {
		g3.mu.Lock()
		defer g3.mu.Unlock()
		return len(g3.mu.remove) > 0
	})
	await.Until(t, 30*time.Second, "the removal to stop in wakeFollowers", func() bool {
		buf := make([]byte, 1<<20)
		return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("multiraft.(*group).wakeFollowers"))
	})
	release1() // group 1's write ends: its slot frees and group 3, still on the host, is woken
	if err := <-d1; err != nil {
		t.Fatal(err)
	}
	await.Until(t, 30*time.Second, "group 3 woken for the free slot", g3.slotFreed.Load)
	unlock()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if err := <-d3; !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("group 3's Snapshot = %v, want ErrGroupNotFound", err)
	}
	select {
	case err := <-d4:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		h.writers.Lock()
		busy, waiting := h.writers.busy, len(h.writers.waiting)
		h.writers.Unlock()
		t.Fatalf("group 4's Snapshot hangs: %d of %d writer slots busy, %d group(s) waiting; the wake for the removed group 3 was lost", busy, maxSnapshotWriters, waiting)
	}
}
