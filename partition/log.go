package partition

import (
	"encoding/binary"
	"errors"
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
	// segIndex is the Raft index of the open segment's first batch (0:
	// it has none); keepIndex the first Raft entry the log reads back
	// (0: none: every batch is a copy).
	segIndex, keepIndex uint64
}

func (m meta) marshal() []byte {
	b := make([]byte, 0, 64)
	for _, v := range [...]uint64{m.next, m.nowMs, m.producers, m.sweepAtMs,
		m.start, m.total, m.firstSeg, m.segBase, m.segPos, m.segFirstMs, m.segLastMs,
		m.retBytes, m.retMs, m.segBytes, m.segMs, m.segIndex, m.keepIndex} {
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
		// Its records are as old as the log's time says, as far as
		// retention by age can tell.
		m.segFirstMs, m.segLastMs = m.nowMs, m.nowMs
		return m, d.err
	}
	for _, f := range [...]*uint64{&m.start, &m.total, &m.firstSeg, &m.segBase, &m.segPos, &m.segFirstMs, &m.segLastMs,
		&m.retBytes, &m.retMs, &m.segBytes, &m.segMs, &m.segIndex, &m.keepIndex} {
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
	// lr reads the Raft log back, nil if the Reader cannot: then every
	// batch is a copy of its records (see doc.go).
	lr multiraft.LogReader
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
	lr, _ := r.(multiraft.LogReader)
	return &Log{cfg: cfg, r: r, lr: lr}
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
	closed    []segment            // the segments this call closed
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

// indexBatch is the value of a batch kept in the Raft log: a zero byte (a
// copy's value starts with its count, never 0), the record count, the
// Raft index of its entry and the slots of its produce requests there.
func indexBatch(count, index uint64, slots []byte) []byte {
	b := binary.AppendUvarint([]byte{0}, count)
	b = binary.AppendUvarint(b, index)
	return append(b, slots...)
}

// RetainFrom implements multiraft.LogRetainer: the first Raft entry whose
// records the log still serves.
func (l *Log) RetainFrom() uint64 {
	if l.head != nil {
		return l.head.keepIndex
	}
	m, err := l.meta()
	if err != nil {
		return 1 // keep everything until the head reads
	}
	return m.keepIndex
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
	var batch []byte // the records of the current batch (a copy), or its slots
	var req Produce  // each command decodes into it
	var batchIndex uint64
	var batchBase, batchCount uint64
	flush := func() {
		if batchCount > 0 {
			if l.lr != nil {
				w.Set(batchKey(batchBase), indexBatch(batchCount, batchIndex, batch))
			} else {
				w.Set(batchKey(batchBase), slices.Concat(binary.AppendUvarint(nil, batchCount), batch))
			}
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
			} else if results[i], err = s.trim(c); err != nil {
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
			batchBase, batchIndex = s.m.next, c.Index
			if s.m.next == s.m.segBase {
				s.m.segFirstMs, s.m.segIndex = s.m.nowMs, c.Index
			}
			if l.lr != nil && s.m.keepIndex == 0 {
				s.m.keepIndex = c.Index
			}
		}
		base := s.m.next
		if l.lr != nil {
			batch = binary.AppendUvarint(batch, uint64(c.Slot))
		}
		for _, r := range req.Records {
			if l.lr == nil {
				batch = binary.AppendUvarint(batch, uint64(len(r)))
				batch = append(batch, r...)
			}
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
	// A fetch reads the head, the batch keys and the Raft entries in
	// several reads while applies go on: a trim (or, on a follower, a
	// snapshot install) may delete what it is about to read. It sees that
	// as a gap (errChanged) and reads again, or answers that the offset is
	// now below the start.
	for range maxFetchAttempts {
		records, hw, err = l.fetch(offset, maxRecords, maxBytes)
		if !errors.Is(err, errChanged) {
			return records, hw, err
		}
		m, merr := l.meta()
		if merr != nil {
			return nil, hw, merr
		}
		if offset < m.start {
			return nil, m.next, &RangeError{Offset: offset, Start: m.start, HighWatermark: m.next}
		}
	}
	return nil, hw, err
}

// maxFetchAttempts bounds the reads again of a fetch whose data changed
// under it (each needs an apply that deleted what it read in between).
const maxFetchAttempts = 3

// errChanged: the batches or entries a fetch read were not contiguous: a
// trim or a snapshot install deleted some under it.
var errChanged = errors.New("partition: the log changed under the fetch")

func (l *Log) fetch(offset uint64, maxRecords, maxBytes int) (records [][]byte, hw uint64, err error) {
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
	// segment kept to hw exists (unless an apply since the head was read
	// deleted it: then the batches read are not contiguous).
	start, found := uint64(0), false
	err = l.r.ScanReverse(batchKey(0), batchKey(offset+1), func(k, _ []byte) bool {
		start, found = binary.BigEndian.Uint64(k[1:]), true
		return false
	})
	if err != nil {
		return nil, hw, err
	}
	if !found {
		return nil, hw, fmt.Errorf("%w: no batch at or below offset %d", errChanged, offset)
	}
	f := fetch{offset: offset, maxRecords: maxRecords, maxBytes: maxBytes}
	// Batches are read a run at a time: the copies decode at once, the
	// ones kept in the Raft log wait for one read of their entries. Each
	// batch must begin where the one before ended.
	for next := start; next < hw && !f.full; {
		var run []batchRef
		var derr error
		scanned := false
		err = l.r.Scan(batchKey(next), batchKey(hw), func(k, v []byte) bool {
			scanned = true
			base := binary.BigEndian.Uint64(k[1:])
			if base != next {
				derr = fmt.Errorf("%w: batch at %d where %d was expected", errChanged, base, next)
				return false
			}
			if len(v) > 0 && v[0] == 0 {
				ref, err := decodeIndexBatch(base, v)
				if derr = err; err != nil {
					return false
				}
				run = append(run, ref)
				next = base + ref.count
				return len(run) < maxRunBatches
			}
			if len(run) > 0 {
				return false // read the run first, in offset order
			}
			next = f.copied(base, v)
			derr = f.err
			return !f.full && derr == nil
		})
		if err == nil {
			err = derr
		}
		if err == nil && len(run) > 0 {
			err = l.readRun(&f, run)
		}
		if err == nil && !scanned {
			err = fmt.Errorf("%w: no batch at %d below the high watermark %d", errChanged, next, hw)
		}
		if err != nil {
			return nil, hw, err
		}
	}
	return f.records, hw, nil
}

// maxRunBatches bounds the batches a fetch reads the entries of at once.
const maxRunBatches = 256

// fetch is what one Fetch collects.
type fetch struct {
	offset     uint64
	maxRecords int
	maxBytes   int
	records    [][]byte
	size       int
	full       bool
	err        error
}

// add takes the record at offset off, if it is wanted and fits.
func (f *fetch) add(off uint64, rec []byte) {
	if f.full || off < f.offset {
		return
	}
	if len(f.records) > 0 && f.size+len(rec) > f.maxBytes {
		f.full = true
		return
	}
	f.records = append(f.records, slices.Clone(rec))
	f.size += len(rec)
	if len(f.records) == f.maxRecords {
		f.full = true
	}
}

// copied takes the records of a batch stored as a copy; it returns the
// offset after the batch.
func (f *fetch) copied(base uint64, v []byte) uint64 {
	d := decoder{b: v}
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil && !f.full; i++ {
		rec := d.bytes()
		if d.err == nil {
			f.add(base+i, rec)
		}
	}
	f.err = d.err
	return base + n
}

// batchRef is a batch kept in the Raft log: its records are those of the
// produce requests at slots of the entry at index.
type batchRef struct {
	base, count, index uint64
	slots              []uint64
}

func decodeIndexBatch(base uint64, v []byte) (batchRef, error) {
	d := decoder{b: v[1:]}
	ref := batchRef{base: base, count: d.uvarint(), index: d.uvarint()}
	for d.err == nil && len(d.b) > 0 {
		ref.slots = append(ref.slots, d.uvarint())
	}
	if d.err == nil && (ref.count == 0 || len(ref.slots) == 0) {
		d.err = fmt.Errorf("%w: batch at %d names no records", ErrMalformed, base)
	}
	return ref, d.err
}

// errEntryMissing: a batch's entry is not in the Raft log (a trim deleted
// it since the fetch began, or the log is damaged).
var errEntryMissing = fmt.Errorf("%w: a batch's Raft entry is missing", errChanged)

// readRun reads the records of a run of batches from their entries, in
// one pass over the Raft log.
func (l *Log) readRun(f *fetch, run []batchRef) error {
	if l.lr == nil {
		return fmt.Errorf("%w: batches kept in the Raft log, and no LogReader to read them", ErrMalformed)
	}
	var req Produce
	i, k := 0, 0 // the batch and the slot in it waited for
	off := run[0].base
	var derr error
	err := l.lr.ReadCommands(run[0].index, run[len(run)-1].index+1, func(c multiraft.Command) bool {
		if i < len(run) && run[i].index < c.Index {
			derr = fmt.Errorf("%w: entry %d", errEntryMissing, run[i].index)
			return false
		}
		if i == len(run) || run[i].index != c.Index || run[i].slots[k] != uint64(c.Slot) {
			return true // another request of the entry (refused, or a control command)
		}
		if derr = req.Unmarshal(c.Data); derr != nil {
			return false
		}
		for _, rec := range req.Records {
			f.add(off, rec)
			off++
		}
		if k++; k == len(run[i].slots) {
			if off != run[i].base+run[i].count {
				derr = fmt.Errorf("%w: batch at %d holds %d records, its requests %d", ErrMalformed, run[i].base, run[i].count, off-run[i].base)
				return false
			}
			i, k = i+1, 0
		}
		return !f.full
	})
	if err == nil {
		err = derr
	}
	if err == nil && i < len(run) && !f.full {
		err = fmt.Errorf("%w: entry %d", errEntryMissing, run[i].index)
	}
	return err
}
