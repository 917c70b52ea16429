package partition

import (
	"bytes"
	"math"
	"testing"
)

// TestProduceSize: Size is the exact length of the encoding, across the
// varint boundaries of every field.
func TestProduceSize(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 16383, 16384, 1<<21 - 1, 1 << 21, math.MaxUint64} {
		for _, lengths := range [][]int{nil, {0}, {1, 127}, {128, 16383, 16384}, {1<<21 - 1, 1 << 21}} {
			p := &Produce{ProducerID: v, Sequence: v / 3, TimestampMs: v / 7}
			for _, n := range lengths {
				p.Records = append(p.Records, bytes.Repeat([]byte{'x'}, n))
			}
			data := p.Marshal()
			if p.Size() != len(data) {
				t.Fatalf("ID %d, records %v: Size %d, encoded %d", v, lengths, p.Size(), len(data))
			}
			back, err := UnmarshalProduce(data)
			if err != nil || back.ProducerID != v || len(back.Records) != len(lengths) {
				t.Fatalf("ID %d, records %v: decoded %+v, %v", v, lengths, back, err)
			}
		}
	}
}

// TestMaxSize: no request within the limits is larger than MaxSize, and
// one record of the largest size with the largest IDs is exactly as large.
func TestMaxSize(t *testing.T) {
	for _, lim := range []struct{ records, recordBytes, bytes int }{
		{1, 1 << 20, 1 << 20},
		{10000, 1 << 20, 1 << 20},
		{3, 100, 250},
		{1000, 200, 100}, // records may not be longer than the request
		{5, 1 << 14, 1 << 16},
		{200, 127, 200 * 127},
	} {
		biggest := func(records [][]byte) *Produce {
			return &Produce{ProducerID: math.MaxUint64, Sequence: math.MaxUint64, TimestampMs: math.MaxUint64, Records: records}
		}
		limit := MaxSize(lim.records, lim.recordBytes, lim.bytes)
		longest := min(lim.recordBytes, lim.bytes)
		if lim.records == 1 {
			if got := biggest([][]byte{make([]byte, longest)}).Size(); got != limit {
				t.Errorf("%+v: one record of %d bytes is %d bytes, MaxSize %d", lim, longest, got, limit)
			}
		}
		// Requests that use every record and every byte, with records
		// of each length-prefix size: the largest ones there are.
		for _, length := range []int{0, 1, 127, 128, 16383, 16384, longest} {
			if length > longest {
				continue
			}
			var records [][]byte
			left := lim.bytes
			for len(records) < lim.records && left >= length {
				records = append(records, make([]byte, length))
				left -= length
			}
			for i := 0; i < len(records) && left > 0; i++ { // the rest of the bytes
				grow := min(left, longest-len(records[i]))
				records[i] = make([]byte, len(records[i])+grow)
				left -= grow
			}
			if got := biggest(records).Size(); got > limit {
				t.Errorf("%+v: %d records of %d bytes and more encode to %d bytes, over MaxSize %d", lim, len(records), length, got, limit)
			}
		}
	}
}
