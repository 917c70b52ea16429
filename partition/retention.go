package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// Retention.
//
// A partition keeps its records for as long as its retention says: by size
// (the log is cut back to about Retention.Bytes) and by age (records older
// than Retention.Age go), as Kafka's retention.bytes and retention.ms do.
// Records are grouped into segments (a segment closes once it holds
// Retention.SegmentBytes or spans Retention.SegmentAge), and whole
// segments go: the log start offset moves to the base of the first segment
// kept.
//
// Who decides. The leader decides when the start moves, on its clock
// (RetentionTarget, called by a host-wide sweep, never by a timer per
// partition), and proposes a Trim command with the new start. Every
// replica applies the command the same way: it advances the start and
// deletes the records below it with range deletions. So the start offset
// is the same on every replica at every applied index, whatever each
// replica's clock says, and a snapshot carries it like everything else.
// The retention settings themselves are replicated too (a Configure
// command): a new leader, a restarted replica and one that joins by
// snapshot all know them.
//
// Keys: segment index 's' <base:8 BE> -> pos first-ms last-ms (uvarints):
// a closed segment's byte position in the log (the bytes of records
// appended before it), and the leader stamps of its first and last
// records. The open segment is in the log head.

// Retention is a partition's retention. Zero fields take defaults; zero
// Bytes and Age keep everything.
type Retention struct {
	// Bytes: the log is trimmed, a segment at a time, while it would
	// still hold at least this many bytes of records without its oldest
	// segment. 0: no limit by size.
	Bytes uint64
	// Age: segments whose newest record is older go. 0: no limit by age.
	Age time.Duration
	// SegmentBytes closes a segment once it holds this many bytes of
	// records. Default 64 MiB.
	SegmentBytes uint64
	// SegmentAge closes a segment once its first record is this old (in
	// the log's time) when the next record arrives. Default a quarter of
	// Age, at most an hour (an hour without Age).
	SegmentAge time.Duration
}

// DefaultSegmentBytes is Retention.SegmentBytes's default.
const DefaultSegmentBytes = 64 << 20

const (
	kindConfigure byte = 2
	kindTrim      byte = 3

	segmentPrefix = byte('s')
)

func segmentKey(base uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{segmentPrefix}, base)
}

// segment is a closed segment's index entry; firstIndex is the Raft index
// of its first batch.
type segment struct {
	base, pos, firstMs, lastMs, firstIndex uint64
}

func (s segment) marshal() []byte {
	b := binary.AppendUvarint(nil, s.pos)
	b = binary.AppendUvarint(b, s.firstMs)
	b = binary.AppendUvarint(b, s.lastMs)
	return binary.AppendUvarint(b, s.firstIndex)
}

func unmarshalSegment(base uint64, v []byte) (segment, error) {
	d := decoder{b: v}
	s := segment{base: base, pos: d.uvarint(), firstMs: d.uvarint(), lastMs: d.uvarint(), firstIndex: d.uvarint()}
	return s, d.err
}

// MarshalConfigure encodes a command that sets the partition's retention.
func MarshalConfigure(r Retention) []byte {
	b := []byte{kindConfigure}
	b = binary.AppendUvarint(b, r.Bytes)
	b = binary.AppendUvarint(b, uint64(max(r.Age, 0)/time.Millisecond))
	b = binary.AppendUvarint(b, r.SegmentBytes)
	return binary.AppendUvarint(b, uint64(max(r.SegmentAge, 0)/time.Millisecond))
}

// MarshalTrim encodes a command that moves the log start offset up to
// start (never down, never past the high watermark).
func MarshalTrim(start uint64) []byte {
	return binary.AppendUvarint([]byte{kindTrim}, start)
}

// segmentBytes and segmentMs are the effective segment bounds.
func (m *meta) segmentBytes() uint64 {
	if m.segBytes > 0 {
		return m.segBytes
	}
	return DefaultSegmentBytes
}

func (m *meta) segmentMs() uint64 {
	if m.segMs > 0 {
		return m.segMs
	}
	hour := uint64(time.Hour / time.Millisecond)
	if m.retMs > 0 {
		return max(min(m.retMs/4, hour), 1)
	}
	return hour
}

// retention returns the settings in m.
func (m *meta) retention() Retention {
	return Retention{Bytes: m.retBytes, Age: time.Duration(m.retMs) * time.Millisecond,
		SegmentBytes: m.segBytes, SegmentAge: time.Duration(m.segMs) * time.Millisecond}
}

// roll closes the open segment before an entry's records are appended, if
// it is full or old. It runs at entry boundaries only, on the state the
// commands applied so far made: every replica rolls at the same entries.
func (s *applyState) roll() {
	m := &s.m
	if m.next == m.segBase {
		return // the open segment is empty
	}
	if m.total-m.segPos < m.segmentBytes() && m.nowMs-min(m.segFirstMs, m.nowMs) < m.segmentMs() {
		return
	}
	s.closeSegment()
}

func (s *applyState) closeSegment() {
	m := &s.m
	seg := segment{base: m.segBase, pos: m.segPos, firstMs: m.segFirstMs, lastMs: m.segLastMs, firstIndex: m.segIndex}
	s.w.Set(segmentKey(m.segBase), seg.marshal())
	s.closed = append(s.closed, seg)
	m.segBase, m.segPos, m.segFirstMs, m.segLastMs, m.segIndex = m.next, m.total, 0, 0, 0
}

// configure applies a Configure command.
func (s *applyState) configure(data []byte) []byte {
	d := decoder{b: data[1:]}
	retBytes, retMs, segBytes, segMs := d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return encodeResult(codeMalformed, 0, 0, 0)
	}
	s.m.retBytes, s.m.retMs, s.m.segBytes, s.m.segMs = retBytes, retMs, segBytes, segMs
	return encodeResult(codeOK, s.m.start, 0, 0)
}

// trim applies a Trim command: the start moves up to the new offset, and
// the segments wholly below it are deleted: their batches, and (the host
// truncates to RetainFrom) the Raft entries that hold their records.
// Records of the segment that holds the new start stay on disk below it
// until that segment goes, but are no longer served.
func (s *applyState) trim(c multiraft.Command) ([]byte, error) {
	data := c.Data
	d := decoder{b: data[1:]}
	start := d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return encodeResult(codeMalformed, 0, 0, 0), nil
	}
	m := &s.m
	start = min(start, m.next)
	if start <= m.start {
		return encodeResult(codeOK, m.start, 0, 0), nil
	}
	m.start = start
	if start == m.next && m.next != m.segBase {
		s.closeSegment() // everything goes, the open segment too
	}
	// The first segment kept is the one with the greatest base at or
	// below start: the open segment, or a closed one. The reader shows
	// the segments as of before this call (one it shows may have gone in
	// it, then it is below firstSeg), s.closed those this call closed; so
	// the answer does not depend on how applies were split into calls.
	keep, keepIndex := m.segBase, m.segIndex
	if start < m.segBase {
		keep, keepIndex = m.firstSeg, 0
		var derr error
		err := s.l.r.ScanReverse(segmentKey(0), segmentKey(start+1), func(k, v []byte) bool {
			if len(k) == 9 {
				if base := binary.BigEndian.Uint64(k[1:]); base >= keep {
					var seg segment
					seg, derr = unmarshalSegment(base, v)
					keep, keepIndex = base, seg.firstIndex
				}
			}
			return false
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return nil, fmt.Errorf("partition: finding the segment of offset %d: %w", start, err)
		}
		for _, seg := range s.closed {
			if seg.base <= start && seg.base >= keep {
				keep, keepIndex = seg.base, seg.firstIndex
			}
		}
	}
	if keep > m.firstSeg {
		s.w.DeleteRange(batchKey(0), batchKey(keep))
		s.w.DeleteRange(segmentKey(0), segmentKey(keep))
		m.firstSeg = keep
		if m.keepIndex != 0 {
			// The entries below the first segment kept may go; an empty
			// open segment needs none before this entry (whose requests
			// after this command may be its first records).
			if keepIndex == 0 {
				keepIndex = c.Index
			}
			m.keepIndex = max(m.keepIndex, keepIndex)
		}
	}
	return encodeResult(codeOK, m.start, 0, 0), nil
}

// Bounds is what a replica's log holds.
type Bounds struct {
	// Start is the log start offset: the first offset served.
	Start uint64
	// HighWatermark is one past the last offset applied here.
	HighWatermark uint64
	// Bytes is the size of the records kept, from the first segment kept
	// (which may begin below Start) to the end.
	Bytes uint64
	// Retention is the partition's retention as applied here.
	Retention Retention
	// TimeMs is the log's time: the greatest leader stamp applied.
	TimeMs uint64
}

// Bounds returns what this replica's log holds, as applied.
func (l *Log) Bounds() (Bounds, error) {
	m, err := l.meta()
	if err != nil {
		return Bounds{}, err
	}
	pos, err := l.segmentPos(&m, m.firstSeg)
	if err != nil {
		return Bounds{}, err
	}
	return Bounds{Start: m.start, HighWatermark: m.next, Bytes: m.total - pos, Retention: m.retention(), TimeMs: m.nowMs}, nil
}

// segmentPos returns the byte position of the segment at base.
func (l *Log) segmentPos(m *meta, base uint64) (uint64, error) {
	if base == m.segBase {
		return m.segPos, nil
	}
	v, ok, err := l.r.Get(segmentKey(base))
	if err != nil || !ok {
		return 0, err
	}
	d := decoder{b: v}
	return d.uvarint(), d.err
}

// RetentionTarget returns the start offset the partition's retention asks
// for at nowMs (a leader's clock), and whether it is past the current
// start: then the leader proposes MarshalTrim(start). It reads only the
// log head and the segment index, never the records.
func (l *Log) RetentionTarget(nowMs uint64) (start uint64, trim bool, err error) {
	m, err := l.meta()
	if err != nil || (m.retBytes == 0 && m.retMs == 0) {
		return 0, false, err
	}
	old := func(lastMs uint64) bool { return m.retMs > 0 && lastMs+m.retMs < nowMs }
	// A closed segment goes if the log without it still holds the
	// retained bytes, or if its newest record is too old; the oldest go
	// first, and the first that stays ends the walk.
	target, all := m.start, true
	var prev *segment
	gone := func(end, endPos uint64) bool {
		if (m.retBytes > 0 && m.total-endPos >= m.retBytes) || old(prev.lastMs) {
			target = max(target, end)
			return true
		}
		return false
	}
	var derr error
	err = l.r.Scan(segmentKey(m.firstSeg), segmentKey(m.segBase), func(k, v []byte) bool {
		if len(k) != 9 {
			return true
		}
		var s segment
		if s, derr = unmarshalSegment(binary.BigEndian.Uint64(k[1:]), v); derr != nil {
			return false
		}
		if prev != nil && !gone(s.base, s.pos) {
			all = false
			return false
		}
		prev = &s
		return true
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return 0, false, err
	}
	if all && prev != nil {
		all = gone(m.segBase, m.segPos)
	}
	// The open segment goes only by age, all of it at once (the trim
	// closes it), once every closed segment went.
	if all && m.next > m.segBase && old(m.segLastMs) {
		target = m.next
	}
	return target, target > m.start, nil
}

// RangeError is a fetch from an offset the replica does not serve. It
// matches ErrOffsetOutOfRange.
type RangeError struct {
	Offset, Start, HighWatermark uint64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: offset %d, log start %d, high watermark %d", ErrOffsetOutOfRange, e.Offset, e.Start, e.HighWatermark)
}

func (e *RangeError) Unwrap() error { return ErrOffsetOutOfRange }

// AsRangeError returns the RangeError in err's chain, if any.
func AsRangeError(err error) (*RangeError, bool) {
	var re *RangeError
	ok := errors.As(err, &re)
	return re, ok
}
