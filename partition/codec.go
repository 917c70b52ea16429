package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// Errors.
var (
	// ErrMalformed: a request or stored value that does not decode.
	ErrMalformed = errors.New("partition: malformed")
	// ErrOutOfOrder: a producer's batch does not follow its last one.
	ErrOutOfOrder = errors.New("partition: out-of-order sequence")
	// ErrTooManyProducers: the partition tracks as many producers as
	// it may.
	ErrTooManyProducers = errors.New("partition: too many producers")
	// ErrOffsetOutOfRange: a fetch beyond the high watermark.
	ErrOffsetOutOfRange = errors.New("partition: offset out of range")
	// ErrEmpty: a produce request without records.
	ErrEmpty = errors.New("partition: no records")
)

// Produce is a produce request as proposed: the records, the optional
// producer identity, and the proposing leader's clock.
type Produce struct {
	// ProducerID is 0 for a producer that did not ask for idempotence.
	ProducerID uint64
	// Sequence is the sequence number of the first record.
	Sequence uint64
	// TimestampMs is the leader's clock when it proposed the request.
	TimestampMs uint64
	Records     [][]byte
}

const produceVersion = 1

// Size is the exact length of Marshal's encoding.
func (p *Produce) Size() int {
	n := 1 + uvarintSize(p.ProducerID) + uvarintSize(p.Sequence) + uvarintSize(p.TimestampMs) + uvarintSize(uint64(len(p.Records)))
	for _, r := range p.Records {
		n += uvarintSize(uint64(len(r))) + len(r)
	}
	return n
}

// MaxSize bounds the Size of any Produce of at most maxRecords records,
// each at most maxRecordBytes long and together at most maxBytes, whatever
// its producer ID, sequence and timestamp: the proposal size a host must
// accept for every such request to fit. It is tight for one record of
// maxRecordBytes <= maxBytes (with the largest IDs and timestamp); with
// more records it may exceed the largest real request by up to 4 bytes a
// record (a longest length prefix counted for each). Arguments must not
// be negative.
func MaxSize(maxRecords, maxRecordBytes, maxBytes int) int {
	header := 1 + 3*binary.MaxVarintLen64 + uvarintSize(uint64(maxRecords))
	// No record is longer than min(maxRecordBytes, maxBytes), so none has
	// a longer length prefix.
	prefix := uvarintSize(uint64(min(maxRecordBytes, maxBytes)))
	return header + maxRecords*prefix + maxBytes
}

// uvarintSize is the length of v encoded by binary.AppendUvarint.
func uvarintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// Marshal encodes the request as proposal data.
func (p *Produce) Marshal() []byte {
	b := make([]byte, 0, p.Size())
	b = append(b, produceVersion)
	b = binary.AppendUvarint(b, p.ProducerID)
	b = binary.AppendUvarint(b, p.Sequence)
	b = binary.AppendUvarint(b, p.TimestampMs)
	b = binary.AppendUvarint(b, uint64(len(p.Records)))
	for _, r := range p.Records {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return b
}

// UnmarshalProduce decodes proposal data. Records alias data.
func UnmarshalProduce(data []byte) (*Produce, error) {
	p := &Produce{}
	if err := p.Unmarshal(data); err != nil {
		return nil, err
	}
	return p, nil
}

// Unmarshal decodes a produce request into p, reusing p.Records' array
// (apply decodes each command into one Produce). Records alias data.
func (p *Produce) Unmarshal(data []byte) error {
	if len(data) == 0 || data[0] != produceVersion {
		return fmt.Errorf("%w: produce request version", ErrMalformed)
	}
	d := decoder{b: data[1:]}
	p.ProducerID, p.Sequence, p.TimestampMs = d.uvarint(), d.uvarint(), d.uvarint()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) { // each record takes at least a byte
		d.err = fmt.Errorf("%w: %d records in %d bytes", ErrMalformed, n, len(d.b))
	}
	p.Records = p.Records[:0]
	if d.err == nil {
		p.Records = slices.Grow(p.Records, int(n))
		for i := uint64(0); i < n && d.err == nil; i++ {
			p.Records = append(p.Records, d.bytes())
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return d.err
}

// Result codes of a produce request, as applied.
const (
	codeOK byte = iota
	codeDuplicate
	codeOutOfOrder
	codeMalformed
	codeTooManyProducers
)

// Result is what applying a produce request returned.
type Result struct {
	// BaseOffset and Count place the records in the log (for a
	// duplicate, where the original went).
	BaseOffset, Count uint64
	// Duplicate reports a retry answered with the original offsets.
	Duplicate bool
	// Err is the refusal, if the request was refused: ErrOutOfOrder,
	// ErrTooManyProducers or ErrMalformed.
	Err error
}

func encodeResult(code byte, base, count, expected uint64) []byte {
	b := []byte{code}
	b = binary.AppendUvarint(b, base)
	b = binary.AppendUvarint(b, count)
	return binary.AppendUvarint(b, expected)
}

// DecodeResult decodes what Apply returned for a produce request.
func DecodeResult(b []byte) (Result, error) {
	if len(b) == 0 {
		return Result{}, fmt.Errorf("%w: empty result", ErrMalformed)
	}
	d := decoder{b: b[1:]}
	r := Result{BaseOffset: d.uvarint(), Count: d.uvarint()}
	expected := d.uvarint()
	if d.err != nil {
		return Result{}, d.err
	}
	switch b[0] {
	case codeOK:
	case codeDuplicate:
		r.Duplicate = true
	case codeOutOfOrder:
		r.Err = fmt.Errorf("%w: expected sequence %d", ErrOutOfOrder, expected)
	case codeMalformed:
		r.Err = fmt.Errorf("%w: produce request", ErrMalformed)
	case codeTooManyProducers:
		r.Err = ErrTooManyProducers
	default:
		return Result{}, fmt.Errorf("%w: result code %d", ErrMalformed, b[0])
	}
	return r, nil
}

// decoder reads uvarints and length-prefixed bytes, keeping the first
// error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: %d bytes wanted, %d left", ErrMalformed, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
