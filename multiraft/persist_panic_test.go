package multiraft_test

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// panicSnapSM is a plain state machine whose Snapshot signals entered,
// waits for gate, then panics (a bug in the embedder's code: the group
// must fail alone).
type panicSnapSM struct {
	n       int
	entered chan struct{}
	gate    chan struct{}
}

func (s *panicSnapSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	s.n += len(cmds)
	return make([][]byte, len(cmds)), nil
}

func (s *panicSnapSM) Snapshot(io.Writer) error {
	close(s.entered)
	<-s.gate
	panic("Snapshot panics")
}

func (s *panicSnapSM) Restore(io.Reader) error { return nil }

// TestSnapshotAnsweredOnceOnPanic (from a review): a Host.Snapshot
// request taken by a pass moves to the group's waiters and stays in the
// pass's intake. If the pass then panics (here the state machine's
// Snapshot), recoverGroup answers both; the request must be answered
// once: a second send on its done channel, whose caller has left, would
// block the worker for good (and Host.Close with it).
func TestSnapshotAnsweredOnceOnPanic(t *testing.T) {
	sm := &panicSnapSM{entered: make(chan struct{}), gate: make(chan struct{})}
	cfg := hostConfig(vfs.NewMem(), transport.NewNetwork(), 1)
	cfg.SnapshotEntries = 1 << 40
	cfg.StateMachine = func(multiraft.GroupID) multiraft.StateMachine { return sm }
	clk := cfg.Clock.(*multiraft.ManualClock)
	h, err := multiraft.NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closeHost := func() error {
		done := make(chan error, 1)
		go func() { done <- h.Close() }()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			stuck := strings.Contains(stacks, "(*intake).fail") || strings.Contains(stacks, "answerSnapWaiters")
			t.Fatalf("Host.Close did not return in 20s (a worker stuck answering the Snapshot request again: %v)", stuck)
			return nil
		}
	}
	const g = multiraft.GroupID(1)
	if err := h.CreateGroup(g, []multiraft.NodeID{1}); err != nil {
		t.Fatal(err)
	}
	await.Until(t, time.Minute, "a leader", func() bool {
		if st, err := h.Status(g); err == nil && st.Serving {
			return true
		}
		clk.Advance(100 * time.Millisecond)
		return false
	})
	pctx, pcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pcancel()
	if _, err := h.Propose(pctx, g, []byte("x")); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	answered := make(chan error, 1)
	go func() {
		_, err := h.Snapshot(ctx, g)
		answered <- err
	}()
	select {
	case <-sm.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("premise: the state machine's Snapshot was never called")
	}
	cancel() // the caller leaves while its snapshot is being written
	if err := <-answered; !errors.Is(err, context.Canceled) {
		t.Fatalf("premise: Snapshot returned %v, want its context's error", err)
	}
	close(sm.gate) // the write panics: the group fails alone
	await.Until(t, 30*time.Second, "the group to fail (its queues refuse)", func() bool {
		return errors.Is(h.StaleRead(t.Context(), g, func() error { return nil }), multiraft.ErrGroupFailed)
	})
	if err := closeHost(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
