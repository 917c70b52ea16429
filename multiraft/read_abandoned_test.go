package multiraft_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestReadNotRunAfterItsCallerLeft (from a review): Read's function runs
// at most once, and not at all if Read fails first. Two reads released by
// one Ready: the first function to run cancels the other read's context
// and waits until that Read has returned its error; the other function
// must then not run (anything it did would race its caller).
func TestReadNotRunAfterItsCallerLeft(t *testing.T) {
	c, _ := newCounterCluster(t, 1)
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	propose(t, c, g, "x")
	h := c.Host(1)

	// Hold the group's worker so both reads are taken by one pass.
	hold, held := make(chan struct{}), make(chan struct{})
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- h.StaleRead(t.Context(), g, func() error { close(held); <-hold; return nil })
	}()
	<-held

	type read struct {
		ctx      context.Context
		cancel   context.CancelFunc
		returned chan struct{} // closed once Read returned
		err      error
		ranLate  atomic.Bool // fn ran after Read returned
	}
	var reads [2]*read
	for i := range reads {
		ctx, cancel := context.WithCancel(t.Context())
		reads[i] = &read{ctx: ctx, cancel: cancel, returned: make(chan struct{})}
		defer cancel()
	}
	var first atomic.Int32
	first.Store(-1)
	for i, r := range reads {
		other := reads[1-i]
		go func() {
			r.err = h.Read(r.ctx, g, func() error {
				select {
				case <-r.returned:
					r.ranLate.Store(true)
					return nil
				default:
				}
				if first.CompareAndSwap(-1, int32(i)) {
					other.cancel() // the other caller leaves...
					select {
					case <-other.returned: // ...and is told its read failed
					case <-time.After(10 * time.Second):
					}
				}
				return nil
			})
			close(r.returned)
		}()
	}
	c.WaitFor("both reads queued", time.Minute, func() bool {
		return c.MetricLabel(1, "flotilla_host_requests_waiting", "request", "read") == 3
	})
	close(hold)
	for _, r := range reads {
		select {
		case <-r.returned:
		case <-time.After(30 * time.Second):
			t.Fatal("a read never returned")
		}
	}
	if err := <-holdDone; err != nil {
		t.Fatal(err)
	}
	propose(t, c, g, "y") // a pass after both
	i := first.Load()
	if i < 0 {
		t.Fatal("no read function ran: the premise (both reads taken by one pass) failed")
	}
	other := reads[1-i]
	if !errors.Is(other.err, context.Canceled) {
		t.Fatalf("premise: the cancelled read returned %v, want context.Canceled (its function ran before it left: ran late %v)", other.err, other.ranLate.Load())
	}
	if other.ranLate.Load() {
		t.Fatalf("the read function ran after its Read returned %v", other.err)
	}
}
