// Regression tests from a review: each test's comment tells its scenario
// as it failed before the fix.

package partition

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// hookKV is a raftKV whose next read of the batch keys first runs a hook:
// an apply that commits between two reads of one Fetch, as the group's
// worker may while a fetch runs on a client's goroutine.
type hookKV struct {
	*raftKV
	scan, scanReverse func(start []byte)
}

func (kv *hookKV) Scan(start, end []byte, fn func(k, v []byte) bool) error {
	if f := kv.scan; f != nil && len(start) > 0 && start[0] == batchPrefix {
		f(start)
	}
	return kv.raftKV.Scan(start, end, fn)
}

func (kv *hookKV) ScanReverse(start, end []byte, fn func(k, v []byte) bool) error {
	if f := kv.scanReverse; f != nil && len(start) > 0 && start[0] == batchPrefix {
		kv.scanReverse = nil
		f(start)
	}
	return kv.raftKV.ScanReverse(start, end, fn)
}

func raceRec(i int) []byte { return fmt.Appendf(nil, "rec-%06d", i) } // 10 bytes

// newRaceHarness returns a harness over a hookKV, with n records of 10
// bytes, one per entry, in segments of 4 records.
func newRaceHarness(t *testing.T, n int, copies bool) (*harness, *hookKV) {
	kv := &hookKV{raftKV: newRaftKV()}
	var r multiraft.Reader = kv
	if copies {
		r = &hookMemKV{kv}
	}
	h := &harness{t: t, kv: kv.raftKV, log: New(DefaultConfig(), r), copies: copies}
	h.control(MarshalConfigure(Retention{SegmentBytes: 40}))
	for i := range n {
		h.apply([]*Produce{{TimestampMs: 1000, Records: [][]byte{raceRec(i)}}})
	}
	return h, kv
}

// hookMemKV hides the LogReader: a log of copies.
type hookMemKV struct{ kv *hookKV }

func (m *hookMemKV) Get(k []byte) ([]byte, bool, error) { return m.kv.Get(k) }
func (m *hookMemKV) Scan(s, e []byte, fn func(k, v []byte) bool) error {
	return m.kv.Scan(s, e, fn)
}
func (m *hookMemKV) ScanReverse(s, e []byte, fn func(k, v []byte) bool) error {
	return m.kv.ScanReverse(s, e, fn)
}

// checkFetch: a fetch from offset either fails with a RangeError or
// returns the records from offset on, contiguous.
func checkFetch(t *testing.T, offset int, recs [][]byte, err error) {
	t.Helper()
	if err != nil {
		if _, ok := AsRangeError(err); !ok {
			t.Fatalf("fetch from %d: %v (not a RangeError)", offset, err)
		}
		return
	}
	for i, r := range recs {
		if want := raceRec(offset + i); !bytes.Equal(r, want) {
			t.Fatalf("fetch from %d: record %d (served as offset %d) is %q, want %q: %d records served with no error",
				offset, i, offset+i, r, want, len(recs))
		}
	}
}

// TestFetchRacingTrimStart: a trim that commits between Fetch's read
// of the log head and its search for the batch holding the offset deletes
// that batch; the fetch then serves the first batch left (the new start)
// as if it began at the offset asked for, with no error.
func TestFetchRacingTrimStart(t *testing.T) {
	for _, copies := range []bool{false, true} {
		t.Run(fmt.Sprintf("copies=%v", copies), func(t *testing.T) {
			h, kv := newRaceHarness(t, 20, copies)
			kv.scanReverse = func([]byte) { h.control(MarshalTrim(8)) }
			recs, _, err := h.log.Fetch(2, 100, 1<<20)
			if h.bounds().Start != 8 {
				t.Fatalf("the trim did not apply: start %d", h.bounds().Start)
			}
			checkFetch(t, 2, recs, err)
		})
	}
}

// TestFetchRacingTrimGap: a fetch longer than one run of batches
// (maxRunBatches) reads the batch keys again for its next run; a trim
// that committed in between leaves a gap: the fetch serves the records
// after the new start right after those of the first run.
func TestFetchRacingTrimGap(t *testing.T) {
	h, kv := newRaceHarness(t, 2*maxRunBatches+100, false)
	kv.scan = func(start []byte) {
		if bytes.Equal(start, batchKey(maxRunBatches)) {
			kv.scan = nil
			h.control(MarshalTrim(400))
		}
	}
	recs, _, err := h.log.Fetch(0, 1000, 1<<20)
	if h.bounds().Start != 400 {
		t.Fatalf("the trim did not apply: start %d", h.bounds().Start)
	}
	checkFetch(t, 0, recs, err)
}
