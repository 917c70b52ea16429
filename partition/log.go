package partition

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// Config bounds a partition's producer state.
type Config struct {
	// ProducerTTL is how long (in the log's time: the leaders' stamps) an
	// idle producer's state is kept. Default one hour.
	ProducerTTL time.Duration
	// MaxProducers bounds the producers a partition tracks. Default
	// 10,000.
	MaxProducers int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{ProducerTTL: time.Hour, MaxProducers: 10000} }

// Keys, under the group's span (the host adds the group's prefix).
var (
	metaKey        = []byte("m")
	batchPrefix    = byte('b')
	producerPrefix = byte('p')
	expiryPrefix   = byte('t')
)

func batchKey(base uint64) []byte { return binary.BigEndian.AppendUint64([]byte{batchPrefix}, base) }
func producerKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{producerPrefix}, id)
}
func expiryKey(ts, id uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{expiryPrefix}, ts), id)
}

// meta is the log's head: the next offset, the log's time (the greatest
// leader stamp applied), how many producers it tracks, the log time of
// the next sweep of idle producers; then (see retention.go) the log start
// offset, the bytes of records ever appended, the base of the first
// segment kept, the open segment (base, byte position, first and last
// stamps) and the retention settings.
type meta struct {
	next, nowMs, producers, sweepAtMs uint64

	start, total, firstSeg                 uint64
	segBase, segPos, segFirstMs, segLastMs uint64
	retBytes, retMs, segBytes, segMs       uint64
}

func (m meta) marshal() []byte {
	b := make([]byte, 0, 64)
	for _, v := range [...]uint64{m.next, m.nowMs, m.producers, m.sweepAtMs,
		m.start, m.total, m.firstSeg, m.segBase, m.segPos, m.segFirstMs, m.segLastMs,
		m.retBytes, m.retMs, m.segBytes, m.segMs} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// unmarshalMeta decodes a log head. A head written before retention
// existed has only the first four fields: its log starts at 0, in one open
// segment, and counts its bytes from then on.
func unmarshalMeta(v []byte) (meta, error) {
	d := decoder{b: v}
	m := meta{next: d.uvarint(), nowMs: d.uvarint(), producers: d.uvarint(), sweepAtMs: d.uvarint()}
	if d.err != nil || len(d.b) == 0 {
		return m, d.err
	}
	for _, f := range [...]*uint64{&m.start, &m.total, &m.firstSeg, &m.segBase, &m.segPos, &m.segFirstMs, &m.segLastMs,
		&m.retBytes, &m.retMs, &m.segBytes, &m.segMs} {
		*f = d.uvarint()
	}
	return m, d.err
}

// producer is what the log keeps of one producer: its last batch.
type producer struct {
	firstSeq, count, base, lastMs uint64
}

func (p producer) marshal() []byte {
	b := binary.AppendUvarint(nil, p.firstSeq)
	b = binary.AppendUvarint(b, p.count)
	b = binary.AppendUvarint(b, p.base)
	return binary.AppendUvarint(b, p.lastMs)
}

// Log is one partition's log: its multiraft.DiskStateMachine, and the
// reads served from it.
type Log struct {
	cfg Config
	r   multiraft.Reader
	// head is the meta the last Apply wrote (nil: read it), kept because
	// Apply is the only writer; used by Apply only, on the group's worker.
	// Readers on other goroutines (Fetch) read what is committed.
	head *meta
}

var (
	_ multiraft.DiskStateMachine = (*Log)(nil)
	_ multiraft.DiskRestorer     = (*Log)(nil)
)

// Restored forgets the cached head: a snapshot replaced the log.
func (l *Log) Restored() { l.head = nil }

// New returns the log of a partition over the group's reader.
func New(cfg Config, r multiraft.Reader) *Log {
	d := DefaultConfig()
	if cfg.ProducerTTL <= 0 {
		cfg.ProducerTTL = d.ProducerTTL
	}
	if cfg.MaxProducers <= 0 {
		cfg.MaxProducers = d.MaxProducers
	}
	return &Log{cfg: cfg, r: r}
}

// Factory returns a multiraft.DiskStateMachineFactory of partition logs.
func Factory(cfg Config) multiraft.DiskStateMachineFactory {
	return func(_ multiraft.GroupID, r multiraft.Reader) multiraft.DiskStateMachine { return New(cfg, r) }
}

func (l *Log) meta() (meta, error) {
	v, ok, err := l.r.Get(metaKey)
	if err != nil || !ok {
		return meta{}, err
	}
	return unmarshalMeta(v)
}

func (l *Log) producer(id uint64) (*producer, error) {
	v, ok, err := l.r.Get(producerKey(id))
	if err != nil || !ok {
		return nil, err
	}
	d := decoder{b: v}
	p := &producer{firstSeq: d.uvarint(), count: d.uvarint(), base: d.uvarint(), lastMs: d.uvarint()}
	return p, d.err
}

// applyState is one Apply call's view: what it changed, over what the
// reader shows (the state before the call). Everything it decides depends
// only on the commands applied so far, never on how they were split into
// calls: replicas batch their applies differently.
type applyState struct {
	l         *Log
	w         multiraft.Writer
	m         meta
	ttlMs     uint64
	producers map[uint64]*producer // changed in this call; nil: forgotten
	closed    []uint64             // bases of the segments this call closed
}

// producer returns a producer's state as of now, forgetting it first if it
// has been idle for the TTL.
func (s *applyState) producer(id uint64) (*producer, error) {
	p, ok := s.producers[id]
	if !ok {
		var err error
		if p, err = s.l.producer(id); err != nil {
			return nil, err
		}
	}
	if p != nil && p.lastMs+s.ttlMs < s.m.nowMs {
		s.forget(id, p)
		return nil, nil
	}
	return p, nil
}

func (s *applyState) setProducer(id uint64, old, p *producer) {
	if old != nil {
		s.w.Delete(expiryKey(old.lastMs, id))
	} else {
		s.m.producers++
	}
	s.producers[id] = p
	s.w.Set(producerKey(id), p.marshal())
	s.w.Set(expiryKey(p.lastMs, id), nil)
}

func (s *applyState) forget(id uint64, p *producer) {
	s.w.Delete(expiryKey(p.lastMs, id))
	s.w.Delete(producerKey(id))
	s.producers[id] = nil
	s.m.producers--
}

// sweep forgets every producer idle for the TTL: those stored before this
// call (through the expiry index) and those this call changed.
func (s *applyState) sweep() error {
	if s.m.nowMs <= s.ttlMs {
		return nil
	}
	cutoff := s.m.nowMs - s.ttlMs
	idle := map[uint64]*producer{}
	err := s.l.r.Scan([]byte{expiryPrefix}, expiryKey(cutoff, 0), func(k, _ []byte) bool {
		if len(k) != 17 {
			return true
		}
		ts, id := binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:])
		if _, changed := s.producers[id]; !changed {
			idle[id] = &producer{lastMs: ts}
		}
		return true
	})
	for id, p := range s.producers {
		if p != nil && p.lastMs < cutoff {
			idle[id] = p
		}
	}
	for id, p := range idle {
		s.forget(id, p)
	}
	return err
}

// Apply implements multiraft.DiskStateMachine: it appends the records of
// each produce request it accepts, one batch key per Raft entry, and
// applies the retention commands (see retention.go).
func (l *Log) Apply(w multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	if l.head == nil {
		m, err := l.meta()
		if err != nil {
			return nil, fmt.Errorf("partition: reading the log head: %w", err)
		}
		l.head = &m
	}
	m := *l.head
	var err error
	ttl := uint64(l.cfg.ProducerTTL / time.Millisecond)
	s := &applyState{l: l, w: w, m: m, ttlMs: ttl, producers: map[uint64]*producer{}}
	results := make([][]byte, len(cmds))
	var batch []byte // the records of the current entry
	var req Produce  // each command decodes into it
	var batchBase, batchCount uint64
	flush := func() {
		if batchCount > 0 {
			w.Set(batchKey(batchBase), slices.Concat(binary.AppendUvarint(nil, batchCount), batch))
		}
		batch, batchCount = batch[:0], 0
	}
	for i, c := range cmds {
		if i > 0 && c.Index != cmds[i-1].Index {
			flush()
		}
		if len(c.Data) > 0 && (c.Data[0] == kindConfigure || c.Data[0] == kindTrim) {
			// A control command ends the entry's batch: the records
			// before it and after it are batches of their own.
			flush()
			if c.Data[0] == kindConfigure {
				results[i] = s.configure(c.Data)
			} else if results[i], err = s.trim(c.Data); err != nil {
				return nil, err
			}
			continue
		}
		if err := req.Unmarshal(c.Data); err != nil || len(req.Records) == 0 {
			results[i] = encodeResult(codeMalformed, 0, 0, 0)
			continue
		}
		s.m.nowMs = max(s.m.nowMs, req.TimestampMs)
		if s.m.nowMs >= s.m.sweepAtMs {
			// Idle producers go at most a sixteenth of the TTL late.
			if err := s.sweep(); err != nil {
				return nil, fmt.Errorf("partition: sweeping idle producers: %w", err)
			}
			s.m.sweepAtMs = s.m.nowMs + max(ttl/16, 1)
		}
		n := uint64(len(req.Records))
		var prev *producer
		if req.ProducerID != 0 {
			if prev, err = s.producer(req.ProducerID); err != nil {
				return nil, fmt.Errorf("partition: reading producer %d: %w", req.ProducerID, err)
			}
			switch {
			case prev != nil && req.Sequence == prev.firstSeq && n == prev.count:
				results[i] = encodeResult(codeDuplicate, prev.base, prev.count, 0)
				continue
			case prev != nil && req.Sequence != prev.firstSeq+prev.count:
				results[i] = encodeResult(codeOutOfOrder, 0, 0, prev.firstSeq+prev.count)
				continue
			case prev == nil && s.m.producers >= uint64(l.cfg.MaxProducers):
				results[i] = encodeResult(codeTooManyProducers, 0, 0, 0)
				continue
			}
		}
		if batchCount == 0 {
			s.roll()
			batchBase = s.m.next
			if s.m.segFirstMs == 0 {
				s.m.segFirstMs = s.m.nowMs
			}
		}
		base := s.m.next
		for _, r := range req.Records {
			batch = binary.AppendUvarint(batch, uint64(len(r)))
			batch = append(batch, r...)
			s.m.total += uint64(len(r))
		}
		s.m.segLastMs = s.m.nowMs
		batchCount += n
		s.m.next += n
		if req.ProducerID != 0 {
			s.setProducer(req.ProducerID, prev, &producer{firstSeq: req.Sequence, count: n, base: base, lastMs: s.m.nowMs})
		}
		results[i] = encodeResult(codeOK, base, n, 0)
	}
	flush()
	w.Set(metaKey, s.m.marshal())
	// A failed commit of these writes stops the host, so the cache never
	// runs ahead of the data.
	*l.head = s.m
	return results, nil
}

// HighWatermark returns one past the last offset this replica applied.
func (l *Log) HighWatermark() (uint64, error) {
	m, err := l.meta()
	return m.next, err
}

// Fetch returns up to maxRecords records (and about maxBytes, at least
// one record) from offset on, as this replica applied them, with the high
// watermark. An offset below the log start or beyond the high watermark
// is a *RangeError (ErrOffsetOutOfRange); at the high watermark, the
// answer is empty.
func (l *Log) Fetch(offset uint64, maxRecords, maxBytes int) (records [][]byte, hw uint64, err error) {
	m, err := l.meta()
	if err != nil {
		return nil, 0, err
	}
	hw = m.next
	switch {
	case offset > hw || offset < m.start:
		return nil, hw, &RangeError{Offset: offset, Start: m.start, HighWatermark: hw}
	case offset == hw || maxRecords <= 0:
		return nil, hw, nil
	}
	// The batch holding offset is the one with the greatest base at or
	// below it; batches are immutable, and every one from the first
	// segment kept to hw exists.
	start := uint64(0)
	err = l.r.ScanReverse(batchKey(0), batchKey(offset+1), func(k, _ []byte) bool {
		start = binary.BigEndian.Uint64(k[1:])
		return false
	})
	if err != nil {
		return nil, hw, err
	}
	size := 0
	var derr error
	err = l.r.Scan(batchKey(start), batchKey(hw), func(k, v []byte) bool {
		base := binary.BigEndian.Uint64(k[1:])
		d := decoder{b: v}
		n := d.uvarint()
		for i := uint64(0); i < n && d.err == nil; i++ {
			rec := d.bytes()
			if d.err != nil || base+i < offset {
				continue
			}
			if len(records) > 0 && size+len(rec) > maxBytes {
				return false
			}
			records = append(records, slices.Clone(rec))
			size += len(rec)
			if len(records) == maxRecords {
				return false
			}
		}
		derr = d.err
		return derr == nil
	})
	if err == nil {
		err = derr
	}
	return records, hw, err
}
