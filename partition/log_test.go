package partition

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/multiraft"
)

// memKV is a sorted in-memory key space: the Reader a Log reads, and the
// Writer whose writes land only when an Apply call ends, as the host's do.
type memKV struct {
	m       map[string][]byte
	pending []func()
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (kv *memKV) Get(key []byte) ([]byte, bool, error) {
	v, ok := kv.m[string(key)]
	return slices.Clone(v), ok, nil
}

func (kv *memKV) keys(start, end []byte) []string {
	var ks []string
	for k := range kv.m {
		if k >= string(start) && (end == nil || k < string(end)) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

func (kv *memKV) Scan(start, end []byte, fn func(k, v []byte) bool) error {
	for _, k := range kv.keys(start, end) {
		if !fn([]byte(k), kv.m[k]) {
			break
		}
	}
	return nil
}

func (kv *memKV) ScanReverse(start, end []byte, fn func(k, v []byte) bool) error {
	ks := kv.keys(start, end)
	for i := len(ks) - 1; i >= 0; i-- {
		if !fn([]byte(ks[i]), kv.m[ks[i]]) {
			break
		}
	}
	return nil
}

func (kv *memKV) Set(k, v []byte) {
	k, v = slices.Clone(k), slices.Clone(v)
	kv.pending = append(kv.pending, func() { kv.m[string(k)] = v })
}

func (kv *memKV) Delete(k []byte) {
	k = slices.Clone(k)
	kv.pending = append(kv.pending, func() { delete(kv.m, string(k)) })
}

// DeleteRange deletes at commit what the range holds then, as a Pebble
// batch does: keys set earlier in the same batch too.
func (kv *memKV) DeleteRange(start, end []byte) {
	start, end = slices.Clone(start), slices.Clone(end)
	kv.pending = append(kv.pending, func() {
		for _, k := range kv.keys(start, end) {
			delete(kv.m, k)
		}
	})
}

func (kv *memKV) commit() {
	for _, f := range kv.pending {
		f()
	}
	kv.pending = nil
}

// raftKV is memKV with a Raft log to read back (multiraft.LogReader): the
// commands of each entry, kept from the index the partition's RetainFrom
// says (as a host truncates its log).
type raftKV struct {
	*memKV
	log map[uint64][]multiraft.Command
}

func newRaftKV() *raftKV { return &raftKV{memKV: newMemKV(), log: map[uint64][]multiraft.Command{}} }

func (kv *raftKV) ReadCommands(lo, hi uint64, fn func(multiraft.Command) bool) error {
	for i := lo; i < hi; i++ {
		for _, c := range kv.log[i] {
			if !fn(c) {
				return nil
			}
		}
	}
	return nil
}

// append puts entries in the log before they are applied.
func (kv *raftKV) append(cmds []multiraft.Command) {
	for _, c := range cmds {
		kv.log[c.Index] = append(kv.log[c.Index], c)
	}
}

// truncate drops the entries below from, as the host does.
func (kv *raftKV) truncate(from uint64) {
	for i := range kv.log {
		if from > 0 && i < from {
			delete(kv.log, i)
		}
	}
}

// harness applies produce requests to one log, one entry per call unless
// told otherwise. Its log reads records back from the Raft log, as a
// host's does; with copies set, it is given no LogReader and copies them.
type harness struct {
	t      *testing.T
	kv     *raftKV
	log    *Log
	index  uint64
	copies bool
}

func newHarness(t *testing.T, cfg Config) *harness {
	kv := newRaftKV()
	return &harness{t: t, kv: kv, log: New(cfg, kv)}
}

// newCopyHarness is a harness whose log copies its records at apply.
func newCopyHarness(t *testing.T, cfg Config) *harness {
	kv := newRaftKV()
	return &harness{t: t, kv: kv, log: New(cfg, kv.memKV), copies: true}
}

// run applies commands in one call, with the host's part: the log holds
// them first, and is truncated to RetainFrom after.
func (h *harness) run(cmds []multiraft.Command) [][]byte {
	h.t.Helper()
	h.kv.append(cmds)
	raw, err := h.log.Apply(h.kv, cmds)
	if err != nil {
		h.t.Fatal(err)
	}
	h.kv.commit()
	if h.copies {
		h.kv.truncate(h.index + 1)
	} else {
		h.kv.truncate(h.log.RetainFrom())
	}
	return raw
}

// apply applies entries (each a list of requests) in one call.
func (h *harness) apply(entries ...[]*Produce) []Result {
	h.t.Helper()
	var cmds []multiraft.Command
	for _, e := range entries {
		h.index++
		for slot, p := range e {
			cmds = append(cmds, multiraft.Command{Index: h.index, Slot: slot, Data: p.Marshal()})
		}
	}
	raw := h.run(cmds)
	out := make([]Result, len(raw))
	for i, r := range raw {
		var err error
		if out[i], err = DecodeResult(r); err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

func recs(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return out
}

// TestProduceFetch: offsets are dense across requests and entries; Fetch
// reads from any offset, within its record and byte bounds, up to the
// high watermark; beyond it is an error.
func TestProduceFetch(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	res := h.apply(
		[]*Produce{{Records: recs("a", 3)}, {Records: recs("b", 2)}}, // one entry, two requests
		[]*Produce{{Records: recs("c", 4)}},
	)
	want := [][2]uint64{{0, 3}, {3, 2}, {5, 4}}
	for i, r := range res {
		if r.Err != nil || r.BaseOffset != want[i][0] || r.Count != want[i][1] {
			t.Fatalf("request %d: %+v, want base %d count %d", i, r, want[i][0], want[i][1])
		}
	}
	if n := len(h.kv.keys([]byte{batchPrefix}, []byte{batchPrefix + 1})); n != 2 {
		t.Fatalf("%d batch keys for 2 entries", n)
	}
	all := slices.Concat(recs("a", 3), recs("b", 2), recs("c", 4))
	for off := 0; off <= len(all); off++ {
		got, hw, err := h.log.Fetch(uint64(off), 100, 1<<20)
		if err != nil || hw != 9 || !slices.EqualFunc(got, all[off:], bytes.Equal) {
			t.Fatalf("fetch %d: %q hw %d err %v", off, got, hw, err)
		}
	}
	if got, _, _ := h.log.Fetch(1, 3, 1<<20); !slices.EqualFunc(got, all[1:4], bytes.Equal) {
		t.Fatalf("fetch 3 from 1: %q", got)
	}
	if got, _, _ := h.log.Fetch(4, 100, 5); len(got) != 1 {
		t.Fatalf("fetch with a 5-byte bound returned %d records, want the one that does not fit alone", len(got))
	}
	if _, _, err := h.log.Fetch(10, 1, 100); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("fetch beyond the high watermark: %v", err)
	}
	if res := h.apply([]*Produce{{}}); !errors.Is(res[0].Err, ErrMalformed) {
		t.Fatalf("empty request: %+v", res[0])
	}
	raw, err := h.log.Apply(h.kv, []multiraft.Command{{Index: 99, Data: []byte{1, 0xff}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := DecodeResult(raw[0]); !errors.Is(r.Err, ErrMalformed) {
		t.Fatalf("garbage request: %+v", r)
	}
}

// TestIdempotentProducer: a retry of a producer's last batch is answered
// with its original offsets and appends nothing; a batch that does not
// follow is refused with the sequence expected; producers are independent.
func TestIdempotentProducer(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	p1 := &Produce{ProducerID: 7, Sequence: 0, TimestampMs: 1000, Records: recs("x", 3)}
	first := h.apply([]*Produce{p1})[0]
	retry := h.apply([]*Produce{p1}, []*Produce{{ProducerID: 8, Sequence: 40, TimestampMs: 1001, Records: recs("y", 1)}})
	if !retry[0].Duplicate || retry[0].BaseOffset != first.BaseOffset || retry[0].Count != 3 {
		t.Fatalf("retry: %+v, first %+v", retry[0], first)
	}
	if retry[1].Err != nil || retry[1].BaseOffset != 3 {
		t.Fatalf("another producer: %+v", retry[1])
	}
	gap := h.apply([]*Produce{{ProducerID: 7, Sequence: 5, TimestampMs: 1002, Records: recs("z", 1)}})[0]
	if !errors.Is(gap.Err, ErrOutOfOrder) || !bytes.Contains([]byte(gap.Err.Error()), []byte("expected sequence 3")) {
		t.Fatalf("gap: %+v", gap)
	}
	next := h.apply([]*Produce{{ProducerID: 7, Sequence: 3, TimestampMs: 1003, Records: recs("w", 2)}})[0]
	if next.Err != nil || next.BaseOffset != 4 {
		t.Fatalf("next batch: %+v", next)
	}
	// A batch and its retry in one entry: the retry is a duplicate.
	p := &Produce{ProducerID: 7, Sequence: 5, TimestampMs: 1004, Records: recs("v", 1)}
	both := h.apply([]*Produce{p, p})
	if both[0].Err != nil || !both[1].Duplicate || both[1].BaseOffset != both[0].BaseOffset {
		t.Fatalf("batch and retry in one entry: %+v", both)
	}
	if _, hw, _ := h.log.Fetch(0, 0, 0); hw != 7 {
		t.Fatalf("high watermark %d, want 7: a duplicate appended", hw)
	}
}

// TestProducerExpiry: a producer idle for the TTL, in the leaders' time,
// is forgotten; the number of producers is bounded and frees up as they
// expire.
func TestProducerExpiry(t *testing.T) {
	h := newHarness(t, Config{ProducerTTL: time.Second, MaxProducers: 2})
	at := func(id, seq, ms uint64) *Produce {
		return &Produce{ProducerID: id, Sequence: seq, TimestampMs: ms, Records: recs("r", 1)}
	}
	h.apply([]*Produce{at(1, 0, 10_000)}, []*Produce{at(2, 0, 10_100)})
	if r := h.apply([]*Produce{at(3, 0, 10_200)})[0]; !errors.Is(r.Err, ErrTooManyProducers) {
		t.Fatalf("third producer: %+v", r)
	}
	// Producer 1 stays busy; 2 goes idle past the TTL and is swept.
	h.apply([]*Produce{at(1, 1, 10_600)})
	h.apply([]*Produce{at(1, 2, 11_200)})
	if r := h.apply([]*Produce{at(3, 0, 11_300)})[0]; r.Err != nil {
		t.Fatalf("third producer after the second expired: %+v", r)
	}
	if n := len(h.kv.keys([]byte{producerPrefix}, []byte{producerPrefix + 1})); n != 2 {
		t.Fatalf("%d producers stored, want 2", n)
	}
	if n := len(h.kv.keys([]byte{expiryPrefix}, []byte{expiryPrefix + 1})); n != 2 {
		t.Fatalf("%d expiry index keys, want 2", n)
	}
}

// TestApplyIsDeterministic: the same commands applied in one call or split
// into calls at random points leave the same state and return the same
// results: replicas batch their applies differently.
func TestApplyIsDeterministic(t *testing.T) {
	testseed.Run(t, testseed.Range(1, 21), func(t *testing.T, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 7))
		cfg := Config{ProducerTTL: 50 * time.Millisecond, MaxProducers: 3}
		var cmds []multiraft.Command
		seqs := map[uint64]uint64{}
		var ms uint64 = 1000
		for index := uint64(1); index <= 200; index++ {
			for slot := range 1 + rng.IntN(3) {
				id := rng.Uint64N(6)
				ms += rng.Uint64N(15)
				p := &Produce{ProducerID: id, Sequence: seqs[id], TimestampMs: ms, Records: recs("r", 1+rng.IntN(3))}
				switch rng.IntN(10) {
				case 0:
					p.Sequence += 2 // out of order
				case 1:
					if seqs[id] >= 1 {
						p.Sequence-- // a retry or a stale batch
					}
				default:
					seqs[id] += uint64(len(p.Records))
				}
				data := p.Marshal()
				switch rng.IntN(50) {
				case 0:
					data = data[:len(data)/2]
				case 1:
					data = MarshalConfigure(Retention{Bytes: rng.Uint64N(200), Age: time.Duration(rng.IntN(100)) * time.Millisecond,
						SegmentBytes: 1 + rng.Uint64N(40), SegmentAge: time.Duration(rng.IntN(50)) * time.Millisecond})
				case 2, 3:
					data = MarshalTrim(rng.Uint64N(index * 3))
				}
				cmds = append(cmds, multiraft.Command{Index: index, Slot: slot, Data: data})
			}
		}
		run := func(split, copies bool) (map[string][]byte, [][]byte, [][]byte) {
			kv := newRaftKV()
			kv.append(cmds)
			var r multiraft.Reader = kv
			if copies {
				r = kv.memKV
			}
			l := New(cfg, r)
			var results [][]byte
			for start := 0; start < len(cmds); {
				end := len(cmds)
				if split {
					end = min(len(cmds), start+1+rng.IntN(20))
					for end < len(cmds) && cmds[end].Index == cmds[end-1].Index {
						end++ // a call holds whole entries
					}
				}
				r, err := l.Apply(kv, cmds[start:end])
				if err != nil {
					t.Fatal(err)
				}
				kv.commit()
				if !copies {
					kv.truncate(l.RetainFrom())
				}
				results = append(results, r...)
				start = end
			}
			b, err := l.Bounds()
			if err != nil {
				t.Fatal(err)
			}
			recs, _, err := l.Fetch(b.Start, 1<<20, 1<<30)
			if err != nil {
				t.Fatalf("fetch from the start %d: %v", b.Start, err)
			}
			return kv.m, results, recs
		}
		for _, copies := range []bool{false, true} {
			whole, wholeRes, wholeRecs := run(false, copies)
			for range 3 {
				split, splitRes, splitRecs := run(true, copies)
				if !slices.EqualFunc(wholeRes, splitRes, bytes.Equal) {
					t.Fatal("results differ with the calls split differently")
				}
				if !slices.EqualFunc(wholeRecs, splitRecs, bytes.Equal) {
					t.Fatal("records served differ with the calls split differently")
				}
				if len(whole) != len(split) {
					t.Fatalf("%d keys vs %d with the calls split differently", len(whole), len(split))
				}
				for k, v := range whole {
					if !bytes.Equal(split[k], v) {
						t.Fatalf("key %q differs with the calls split differently", k)
					}
				}
			}
			if copies {
				_, copyRes, copyRecs := run(false, false)
				if !slices.EqualFunc(wholeRes, copyRes, bytes.Equal) || !slices.EqualFunc(wholeRecs, copyRecs, bytes.Equal) {
					t.Fatal("a log that copies its records and one that reads them back differ")
				}
			}
		}
	})
}

// FuzzUnmarshalProduce: no input makes decoding panic, and what decodes
// survives an encode and decode unchanged.
func FuzzUnmarshalProduce(f *testing.F) {
	f.Add((&Produce{ProducerID: 1, Sequence: 2, TimestampMs: 3, Records: recs("a", 2)}).Marshal())
	f.Add([]byte{1, 0, 0, 0, 200})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := UnmarshalProduce(data)
		if err != nil {
			return
		}
		q, err := UnmarshalProduce(p.Marshal())
		if err != nil || q.ProducerID != p.ProducerID || q.Sequence != p.Sequence || q.TimestampMs != p.TimestampMs ||
			!slices.EqualFunc(q.Records, p.Records, bytes.Equal) {
			t.Fatalf("round trip of %x: %+v became %+v (%v)", data, p, q, err)
		}
	})
}

// TestRestoredForgetsHead: Apply keeps the log's head in memory between
// calls; once a snapshot replaced the data (Restored), the next Apply
// continues from the snapshot's head, not from the cached one.
func TestRestoredForgetsHead(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.apply([]*Produce{{Records: recs("a", 5)}})
	// A snapshot from a replica that is further ahead: 100 records.
	other := newHarness(t, DefaultConfig())
	other.apply([]*Produce{{Records: recs("b", 100)}})
	h.kv.m, h.kv.log = other.kv.m, other.kv.log
	h.log.Restored()
	if res := h.apply([]*Produce{{Records: recs("c", 1)}}); res[0].BaseOffset != 100 {
		t.Fatalf("after a restore the next record went to offset %d, want 100", res[0].BaseOffset)
	}
}

// TestUpgradeFromCopies: a log written by a build that copied records at
// apply (or by a host without a LogReader) reads on once the records are
// kept in the Raft log instead: a fetch crosses from copies to entries,
// and retention trims both.
func TestUpgradeFromCopies(t *testing.T) {
	old := newCopyHarness(t, DefaultConfig())
	old.control(MarshalConfigure(Retention{Bytes: 40, SegmentBytes: 20}))
	old.produceAt(10, 6, 10) // copies: segments [0,2) [2,4) [4,6)
	if old.log.RetainFrom() != 0 {
		t.Fatalf("a log of copies retains from %d", old.log.RetainFrom())
	}
	// The upgrade: the same data, a log that reads the Raft log.
	h := &harness{t: t, kv: old.kv, log: New(DefaultConfig(), old.kv), index: old.index}
	h.produceAt(20, 6, 10) // kept in the log: [6,8) [8,10) [10,12)
	recs, hw, err := h.log.Fetch(0, 100, 1<<20)
	if err != nil || hw != 12 || len(recs) != 12 {
		t.Fatalf("fetch across copies and entries: %d records, hw %d, %v", len(recs), hw, err)
	}
	if start := h.trimTo(20); start != 8 {
		t.Fatalf("start %d after trimming, want 8", start)
	}
	if recs, _, err := h.log.Fetch(8, 100, 1<<20); err != nil || len(recs) != 4 {
		t.Fatalf("fetch after trimming: %d records, %v", len(recs), err)
	}
}
