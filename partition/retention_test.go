package partition

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// control applies control commands, one entry each.
func (h *harness) control(cmds ...[]byte) []Result {
	h.t.Helper()
	var in []multiraft.Command
	for _, c := range cmds {
		h.index++
		in = append(in, multiraft.Command{Index: h.index, Data: c})
	}
	raw := h.run(in)
	out := make([]Result, len(raw))
	for i, r := range raw {
		var err error
		if out[i], err = DecodeResult(r); err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

// produceAt appends n records of size bytes each, one entry per record,
// stamped ms.
func (h *harness) produceAt(ms uint64, n, size int) {
	h.t.Helper()
	for range n {
		h.apply([]*Produce{{TimestampMs: ms, Records: [][]byte{make([]byte, size)}}})
	}
}

func (h *harness) bounds() Bounds {
	h.t.Helper()
	b, err := h.log.Bounds()
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) trimTo(nowMs uint64) uint64 {
	h.t.Helper()
	start, trim, err := h.log.RetentionTarget(nowMs)
	if err != nil {
		h.t.Fatal(err)
	}
	if trim {
		h.control(MarshalTrim(start))
	}
	return h.bounds().Start
}

// TestRetentionBySize: segments close at their size; the leader's target
// drops the oldest whole segments while the rest still holds the retained
// bytes; the trim moves the start there and deletes them; a fetch below
// the start is a RangeError naming it, and one at it reads the records
// kept.
func TestRetentionBySize(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.control(MarshalConfigure(Retention{Bytes: 300, SegmentBytes: 100}))
	h.produceAt(1000, 20, 25) // 500 bytes: segments of 4 records
	if b := h.bounds(); b.Start != 0 || b.HighWatermark != 20 || b.Bytes != 500 {
		t.Fatalf("bounds before retention: %+v", b)
	}
	start := h.trimTo(1000)
	// Segments [0,4) [4,8) [8,12) [12,16) are closed, [16,20) open: the
	// log without [0,4) and [4,8) still holds 300 bytes; without [8,12)
	// it would not.
	if start != 8 {
		t.Fatalf("start %d after trimming, want 8", start)
	}
	if b := h.bounds(); b.Bytes != 300 {
		t.Fatalf("bounds after trimming: %+v", b)
	}
	_, _, err := h.log.Fetch(7, 10, 1<<20)
	re, ok := AsRangeError(err)
	if !ok || !errors.Is(err, ErrOffsetOutOfRange) || re.Start != 8 || re.HighWatermark != 20 {
		t.Fatalf("fetch below the start: %v", err)
	}
	recs, _, err := h.log.Fetch(8, 100, 1<<20)
	if err != nil || len(recs) != 12 {
		t.Fatalf("fetch at the start: %d records, %v", len(recs), err)
	}
	if n := len(h.kv.keys(batchKey(0), batchKey(8))); n != 0 {
		t.Fatalf("%d batches below the start left", n)
	}
	if again := h.trimTo(1000); again != 8 {
		t.Fatalf("a second sweep moved the start to %d", again)
	}
}

// TestRetentionByAge: segments whose newest record is older than the
// retention go, the open one too once it is old; new records start anew.
func TestRetentionByAge(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.control(MarshalConfigure(Retention{Age: time.Second, SegmentAge: 100 * time.Millisecond}))
	h.produceAt(1000, 3, 10)
	h.produceAt(1200, 3, 10) // rolls: [0,3) closed
	h.produceAt(1400, 3, 10) // rolls: [3,6) closed; [6,9) open
	if start := h.trimTo(2100); start != 3 {
		t.Fatalf("start %d at 2100, want 3 (only [0,3) is over a second old)", start)
	}
	if start := h.trimTo(2500); start != 9 {
		t.Fatalf("start %d at 2500, want 9 (everything is old)", start)
	}
	b := h.bounds()
	if b.HighWatermark != 9 || b.Bytes != 0 {
		t.Fatalf("bounds after everything went: %+v", b)
	}
	if recs, hw, err := h.log.Fetch(9, 10, 1<<20); err != nil || len(recs) != 0 || hw != 9 {
		t.Fatalf("fetch at the end of an emptied log: %d records, hw %d, %v", len(recs), hw, err)
	}
	h.produceAt(2600, 2, 10)
	if recs, _, err := h.log.Fetch(9, 10, 1<<20); err != nil || len(recs) != 2 {
		t.Fatalf("fetch after new records: %d, %v", len(recs), err)
	}
	if n := len(h.kv.keys(batchKey(0), batchKey(9))); n != 0 {
		t.Fatalf("%d batches below the start left", n)
	}
}

// TestTrimBounds: a trim never moves the start down or past the high
// watermark; one into the open segment serves from the new start while
// the segment stays on disk.
func TestTrimBounds(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.produceAt(1, 5, 10)
	res := h.control(MarshalTrim(3), MarshalTrim(2), MarshalTrim(99))
	got := []uint64{res[0].BaseOffset, res[1].BaseOffset, res[2].BaseOffset}
	if !slices.Equal(got, []uint64{3, 3, 5}) {
		t.Fatalf("starts after trims to 3, 2, 99: %v", got)
	}
	if _, _, err := h.log.Fetch(4, 1, 100); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("fetch below the start: %v", err)
	}
	if res := h.control([]byte{kindTrim}); res[0].Err == nil {
		t.Fatal("a malformed trim was applied")
	}
}

// TestOldHead: a log head written before retention existed still reads:
// the log starts at 0.
func TestOldHead(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.kv.Set(metaKey, []byte{3, 9, 0, 0}) // next 3, time 9
	h.kv.Set(batchKey(0), []byte{3, 1, 'a', 1, 'b', 1, 'c'})
	h.kv.commit()
	recs, hw, err := h.log.Fetch(0, 10, 100)
	if err != nil || hw != 3 || len(recs) != 3 {
		t.Fatalf("fetch from an old head: %d records, hw %d, %v", len(recs), hw, err)
	}
	h.produceAt(10, 1, 4)
	if b := h.bounds(); b.Start != 0 || b.HighWatermark != 4 {
		t.Fatalf("bounds after a produce on an old head: %+v", b)
	}
}
