// Regression tests from a review: each test's comment tells its scenario
// as it failed before the fix.

package transport

import (
	"bytes"
	"io"
	"testing"
)

// TestSnapshotShorterThanAnnouncedRefused: a stream that sends less data
// than the size it announced is taken whole. The receiver reserved (and
// keeps reserved until the install) the announced size: a peer announcing
// the whole staging budget and sending a byte holds it, and a sender whose
// Measure and WriteData disagree goes unnoticed.
func TestSnapshotShorterThanAnnouncedRefused(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{SnapshotChunkBytes: 64 << 10}, nil, 1, 2)
		data := bytes.Repeat([]byte("snapshot"), 1<<10)
		writeAll := func(w io.Writer) error { _, err := w.Write(data); return err }
		err := sendSnapshotSized(t, ns[1], 2, int64(len(data))+4096, writeAll)
		if err == nil {
			t.Fatalf("a snapshot of %d bytes announced as %d was accepted", len(data), len(data)+4096)
		}
	})
}
