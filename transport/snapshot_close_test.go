package transport

import (
	"io"
	"testing"
	"time"
)

// TestCloseWaitsForSnapshotReceives: a transport's Close returns only
// once no snapshot receive is left in its handler, and cuts the stream of
// one whose sender stalls rather than wait for it. The host closes its
// store after its transport: an in-memory receive used to go on after
// Close, and removed its staged table from a closed store (which restarted
// Pebble's disk-health goroutine, found leaked after the examples).
func TestCloseWaitsForSnapshotReceives(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{SnapshotChunkBytes: 4 << 10}, nil, 1, 2)
		reading := make(chan struct{}, 1)
		ns[2].r.onSnapRead = func(int) {
			select {
			case reading <- struct{}{}:
			default:
			}
		}
		stall := make(chan struct{})
		defer close(stall)
		ns[1].SendSnapshot(2, &OutboundSnapshot{GroupID: 5, Message: snapMsg(), Size: 1 << 20, WriteData: func(w io.Writer) error {
			if _, err := w.Write(make([]byte, 64<<10)); err != nil {
				return err
			}
			<-stall // the sender stops mid-stream
			return nil
		}}, func(error) {})
		select {
		case <-reading:
		case <-time.After(30 * time.Second):
			t.Fatal("the receiver never read snapshot data")
		}
		closed := make(chan struct{})
		go func() {
			_ = ns[2].Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Fatal("Close waited for a receive whose sender stalled")
		}
		if got := ns[2].r.snapReturned.Load(); got != 1 {
			t.Fatalf("Close returned with the snapshot receive still in the handler (%d of 1 returned)", got)
		}
	})
}
