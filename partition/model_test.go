package partition

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestFetchModel: random entries (several requests each, refused
// and duplicate ones, control commands between them, configure with tiny
// segments, trims anywhere, trims past the end) applied in calls of random
// size; after each call every offset from the start to the high watermark
// fetches the records a model says, with random bounds, with the Raft log
// truncated to RetainFrom.
func TestFetchModel(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		for _, copies := range []bool{false, true} {
			t.Run(fmt.Sprintf("seed=%d/copies=%v", seed, copies), func(t *testing.T) {
				fetchModel(t, seed, copies)
			})
		}
	}
}

func fetchModel(t *testing.T, seed uint64, copies bool) {
	rng := rand.New(rand.NewPCG(seed, 99))
	kv := newRaftKV()
	var r multiraft.Reader = kv
	if copies {
		r = kv.memKV
	}
	l := New(Config{ProducerTTL: time.Second, MaxProducers: 4}, r)
	var model [][]byte // every record ever appended, by offset
	seqs := map[uint64]uint64{}
	ms := uint64(1000)
	index := uint64(0)
	for call := 0; call < 200; call++ {
		var cmds []multiraft.Command
		var reqs []*Produce
		for range 1 + rng.IntN(4) {
			index++
			for slot := range 1 + rng.IntN(4) {
				var data []byte
				var p *Produce
				switch k := rng.IntN(20); {
				case k == 0:
					data = MarshalConfigure(Retention{Bytes: rng.Uint64N(300), Age: time.Duration(rng.IntN(200)) * time.Millisecond,
						SegmentBytes: 1 + rng.Uint64N(60), SegmentAge: time.Duration(rng.IntN(100)) * time.Millisecond})
				case k <= 2:
					data = MarshalTrim(rng.Uint64N(uint64(len(model)) + 10))
				case k == 3:
					data = []byte{1, 0xff} // malformed
				default:
					id := rng.Uint64N(6)
					ms += rng.Uint64N(20)
					n := 1 + rng.IntN(3)
					p = &Produce{ProducerID: id, Sequence: seqs[id], TimestampMs: ms}
					for i := range n {
						p.Records = append(p.Records, fmt.Appendf(nil, "i%d-s%d-r%d-%s", index, slot, i, bytes.Repeat([]byte{'x'}, rng.IntN(8))))
					}
					switch rng.IntN(8) {
					case 0:
						p.Sequence += 3
					case 1:
						if seqs[id] >= 1 {
							p.Sequence-- // stale
						}
					}
					data = p.Marshal()
				}
				reqs = append(reqs, p)
				cmds = append(cmds, multiraft.Command{Index: index, Slot: slot, Data: data})
			}
		}
		kv.append(cmds)
		raw, err := l.Apply(kv, cmds)
		if err != nil {
			t.Fatal(err)
		}
		kv.commit()
		if !copies {
			kv.truncate(l.RetainFrom())
		}
		for i, p := range reqs {
			if p == nil {
				continue
			}
			res, err := DecodeResult(raw[i])
			if err != nil {
				t.Fatal(err)
			}
			if res.Err == nil && !res.Duplicate {
				if res.BaseOffset != uint64(len(model)) {
					t.Fatalf("base %d, model has %d", res.BaseOffset, len(model))
				}
				model = append(model, p.Records...)
				if p.ProducerID != 0 {
					seqs[p.ProducerID] = p.Sequence + uint64(len(p.Records))
				}
			}
		}
		b, err := l.Bounds()
		if err != nil {
			t.Fatal(err)
		}
		if b.HighWatermark != uint64(len(model)) {
			t.Fatalf("hw %d, model %d", b.HighWatermark, len(model))
		}
		for off := b.Start; off <= b.HighWatermark; off++ {
			maxRecords, maxBytes := 1+rng.IntN(40), 1+rng.IntN(400)
			if off == b.Start || rng.IntN(50) == 0 {
				maxRecords, maxBytes = 1<<20, 1<<30 // across many runs
			}
			got, hw, err := l.Fetch(off, maxRecords, maxBytes)
			if err != nil || hw != b.HighWatermark {
				t.Fatalf("call %d: fetch %d (start %d hw %d): hw %d err %v", call, off, b.Start, b.HighWatermark, hw, err)
			}
			var want [][]byte
			size := 0
			for _, rec := range model[off:] {
				if len(want) == maxRecords || (len(want) > 0 && size+len(rec) > maxBytes) {
					break
				}
				want = append(want, rec)
				size += len(rec)
			}
			if len(got) != len(want) {
				t.Fatalf("call %d: fetch %d (max %d, %d bytes): %d records, want %d", call, off, maxRecords, maxBytes, len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("call %d: fetch %d: record %d %q want %q", call, off, i, got[i], want[i])
				}
			}
		}
		if b.Start > 0 {
			if _, _, err := l.Fetch(b.Start-1, 1, 1); err == nil {
				t.Fatalf("fetch below the start %d served", b.Start)
			} else if re, ok := AsRangeError(err); !ok || re.Start != b.Start {
				t.Fatalf("fetch below the start: %v", err)
			}
		}
	}
}
