package node

import (
	"fmt"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// Limits are the client API's size limits, all of them, in one place.
//
// Produce checks a request against them once, before anything is
// proposed, and a refusal names the limit. The node sizes its host's
// MaxProposalBytes from them, so a request within them always fits one
// proposal (the host's own check stays as a safety net). Fetch bounds the
// encoded response, protobuf framing included, so a client never gets a
// message larger than it asked for.
//
// A zero field takes its default (DefaultLimits).
type Limits struct {
	// MaxRecordBytes bounds one record. Default 1 MiB. A record this large
	// must fit a fetch response of DefaultFetchResponseBytes, so that a
	// client that never raised its receive limit can read every record.
	MaxRecordBytes int
	// MaxProduceBytes bounds the record data of one produce request (the
	// sum of its records' lengths). Default 1 MiB; at least MaxRecordBytes.
	MaxProduceBytes int
	// MaxProduceRecords bounds the records of one produce request.
	// Default 10,000 (each record costs memory and work beyond its bytes).
	MaxProduceRecords int
	// DefaultFetchRecords bounds the records of a fetch response when the
	// request leaves max_records at 0. Default 1,000.
	DefaultFetchRecords int
	// MaxFetchRecords bounds the records of a fetch response, whatever
	// max_records asks. Default 100,000.
	MaxFetchRecords int
	// DefaultFetchResponseBytes bounds the encoded fetch response when the
	// request leaves max_bytes at 0. Default
	// clientpb.DefaultFetchResponseBytes, gRPC's default receive limit:
	// raise it only if every client raised its own.
	DefaultFetchResponseBytes int
	// MaxFetchResponseBytes bounds the encoded fetch response, whatever
	// max_bytes asks. Default, and at most,
	// clientpb.MaxFetchResponseBytes: what the Go client can receive.
	MaxFetchResponseBytes int
}

// DefaultLimits returns the defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxRecordBytes:            1 << 20,
		MaxProduceBytes:           1 << 20,
		MaxProduceRecords:         10000,
		DefaultFetchRecords:       1000,
		MaxFetchRecords:           100000,
		DefaultFetchResponseBytes: clientpb.DefaultFetchResponseBytes,
		MaxFetchResponseBytes:     clientpb.MaxFetchResponseBytes,
	}
}

// Validate fills the defaults of zero fields and rejects limits that
// contradict each other.
func (l *Limits) Validate() error {
	d := DefaultLimits()
	for _, f := range []struct {
		name  string
		value *int
		def   int
	}{
		{"MaxRecordBytes", &l.MaxRecordBytes, d.MaxRecordBytes},
		{"MaxProduceBytes", &l.MaxProduceBytes, d.MaxProduceBytes},
		{"MaxProduceRecords", &l.MaxProduceRecords, d.MaxProduceRecords},
		{"DefaultFetchRecords", &l.DefaultFetchRecords, d.DefaultFetchRecords},
		{"MaxFetchRecords", &l.MaxFetchRecords, d.MaxFetchRecords},
		{"DefaultFetchResponseBytes", &l.DefaultFetchResponseBytes, d.DefaultFetchResponseBytes},
		{"MaxFetchResponseBytes", &l.MaxFetchResponseBytes, d.MaxFetchResponseBytes},
	} {
		switch {
		case *f.value == 0:
			*f.value = f.def
		// gRPC messages and the request's max_bytes are 32-bit sizes; the
		// bound also keeps the proposal size arithmetic from overflowing.
		case *f.value < 0 || *f.value > math.MaxInt32:
			return fmt.Errorf("node: Limits.%s %d is out of range", f.name, *f.value)
		}
	}
	switch {
	case l.MaxRecordBytes > l.MaxProduceBytes:
		return fmt.Errorf("node: Limits.MaxRecordBytes %d is above MaxProduceBytes %d: such a record could never be produced",
			l.MaxRecordBytes, l.MaxProduceBytes)
	case l.DefaultFetchRecords > l.MaxFetchRecords:
		return fmt.Errorf("node: Limits.DefaultFetchRecords %d is above MaxFetchRecords %d", l.DefaultFetchRecords, l.MaxFetchRecords)
	case l.MaxFetchResponseBytes > clientpb.MaxFetchResponseBytes:
		return fmt.Errorf("node: Limits.MaxFetchResponseBytes %d is above %d, what the Go client can receive",
			l.MaxFetchResponseBytes, clientpb.MaxFetchResponseBytes)
	case l.DefaultFetchResponseBytes > l.MaxFetchResponseBytes:
		return fmt.Errorf("node: Limits.DefaultFetchResponseBytes %d is above MaxFetchResponseBytes %d",
			l.DefaultFetchResponseBytes, l.MaxFetchResponseBytes)
	case maxFetchHeaderBytes+recordFieldSize(l.MaxRecordBytes) > l.DefaultFetchResponseBytes:
		return fmt.Errorf("node: Limits.MaxRecordBytes %d: a fetch response holding such a record is over DefaultFetchResponseBytes %d",
			l.MaxRecordBytes, l.DefaultFetchResponseBytes)
	}
	return nil
}

// proposalBytes is the largest proposal a produce request within the
// limits encodes to: the host's MaxProposalBytes.
func (l *Limits) proposalBytes() int {
	return partition.MaxSize(l.MaxProduceRecords, l.MaxRecordBytes, l.MaxProduceBytes)
}

// checkHost refuses a host config (as adjusted by Config.Host) that would
// refuse a produce request within the limits.
func (l *Limits) checkHost(hc *multiraft.Config) error {
	if need := l.proposalBytes(); hc.MaxProposalBytes < need {
		return fmt.Errorf("node: the host's MaxProposalBytes %d is below %d, the largest produce request Limits allow",
			hc.MaxProposalBytes, need)
	}
	return nil
}

// checkProduce is the one size check of a produce request: a request that
// passes it fits a proposal.
func (l *Limits) checkProduce(records [][]byte) error {
	if len(records) == 0 {
		return status.Error(codes.InvalidArgument, "produce: no records")
	}
	if len(records) > l.MaxProduceRecords {
		// Decoding stops one record past the limit (clientserver.go).
		return status.Errorf(codes.InvalidArgument, "produce: more than MaxProduceRecords %d records", l.MaxProduceRecords)
	}
	total := 0
	for i, r := range records {
		if len(r) > l.MaxRecordBytes {
			return status.Errorf(codes.InvalidArgument, "produce: record %d is %d bytes, over MaxRecordBytes %d", i, len(r), l.MaxRecordBytes)
		}
		total += len(r)
	}
	if total > l.MaxProduceBytes {
		return status.Errorf(codes.InvalidArgument, "produce: %d bytes of records, over MaxProduceBytes %d", total, l.MaxProduceBytes)
	}
	return nil
}

// fetchBounds are the most records and encoded bytes a fetch answers with.
func (l *Limits) fetchBounds(req *clientpb.FetchRequest) (maxRecords, maxBytes int) {
	maxRecords, maxBytes = int(req.GetMaxRecords()), int(req.GetMaxBytes())
	if maxRecords == 0 {
		maxRecords = l.DefaultFetchRecords
	}
	if maxBytes == 0 {
		maxBytes = l.DefaultFetchResponseBytes
	}
	return min(maxRecords, l.MaxFetchRecords), min(maxBytes, l.MaxFetchResponseBytes)
}

// fetchRecordsField is FetchResponse.records' field number.
const fetchRecordsField protowire.Number = 1

// maxFetchHeaderBytes is the largest encoding of a FetchResponse's fields
// other than its records.
var maxFetchHeaderBytes = proto.Size(&clientpb.FetchResponse{BaseOffset: math.MaxUint64, HighWatermark: math.MaxUint64})

// recordFieldSize is the encoded size of one record of n bytes in a
// FetchResponse: its tag, its length and its bytes.
func recordFieldSize(n int) int {
	return protowire.SizeTag(fetchRecordsField) + protowire.SizeBytes(n)
}

// fitRecords sets resp's records to the longest prefix of records that
// keeps the encoded response within maxBytes, but at least one record:
// resp's other fields must be set already, as they count too.
func fitRecords(resp *clientpb.FetchResponse, records [][]byte, maxBytes int) {
	size := proto.Size(resp)
	for i, r := range records {
		size += recordFieldSize(len(r))
		if i > 0 && size > maxBytes {
			records = records[:i]
			break
		}
	}
	resp.Records = records
}
