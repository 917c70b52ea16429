package node

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// startOne starts a one-node cluster (configure, if set, adjusts its
// config after fastTicks) with partition 1 on it, and a client of it.
func startOne(t *testing.T, configure func(*Config)) (*Node, *client.Client) {
	t.Helper()
	nodes, err := LocalCluster(1, t.TempDir(), func(cfg *Config) {
		fastTicks(cfg)
		if configure != nil {
			configure(cfg)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nodes[0].Close(); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New([]string{nodes[0].ClientAddr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.CreatePartition(ctxT(t), 1, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	return nodes[0], c
}

// records returns n records of size bytes, each filled with its index.
func records(n, size int) [][]byte {
	rs := make([][]byte, n)
	for i := range rs {
		rs[i] = bytes.Repeat([]byte{byte(i)}, size)
	}
	return rs
}

// TestProduceLimits: a produce request exactly at each limit is applied;
// one byte or one record more is refused by the one check in Produce
// (nothing reaches the host), with INVALID_ARGUMENT naming the limit.
func TestProduceLimits(t *testing.T) {
	n, c := startOne(t, nil)
	ctx := ctxT(t)
	lim := DefaultLimits()
	half := lim.MaxProduceBytes / 2
	for _, tc := range []struct {
		name    string
		records [][]byte
		// producerID and sequence at their largest make the encoded
		// request as large as it gets.
		producerID, sequence uint64
		refusal              string // "": accepted
	}{
		{name: "a record of MaxRecordBytes", records: records(1, lim.MaxRecordBytes)},
		{name: "the same from an idempotent producer with the largest IDs", records: records(1, lim.MaxRecordBytes),
			producerID: math.MaxUint64, sequence: math.MaxUint64 - 1},
		{name: "a record one byte over", records: [][]byte{nil, make([]byte, lim.MaxRecordBytes+1)},
			refusal: fmt.Sprintf("record 1 is %d bytes, over MaxRecordBytes %d", lim.MaxRecordBytes+1, lim.MaxRecordBytes)},
		{name: "MaxProduceBytes in two records", records: records(2, half)},
		{name: "one byte over MaxProduceBytes", records: [][]byte{make([]byte, half), make([]byte, lim.MaxProduceBytes-half+1)},
			refusal: fmt.Sprintf("%d bytes of records, over MaxProduceBytes %d", lim.MaxProduceBytes+1, lim.MaxProduceBytes)},
		{name: "MaxProduceRecords records", records: records(lim.MaxProduceRecords, lim.MaxProduceBytes/lim.MaxProduceRecords)},
		{name: "one record over MaxProduceRecords", records: records(lim.MaxProduceRecords+1, 1),
			refusal: fmt.Sprintf("more than MaxProduceRecords %d records", lim.MaxProduceRecords)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proposed := n.Metric("flotilla_host_proposals_total")
			resp, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: tc.records,
				ProducerId: tc.producerID, Sequence: tc.sequence})
			if tc.refusal == "" {
				if err != nil || resp.GetCount() != uint64(len(tc.records)) {
					t.Fatalf("refused: %v (%v)", err, resp)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.refusal) {
				t.Fatalf("got %v, want INVALID_ARGUMENT naming the limit: %q", err, tc.refusal)
			}
			if got := n.Metric("flotilla_host_proposals_total"); got != proposed {
				t.Fatalf("a refused request reached the host (%v proposals, then %v)", proposed, got)
			}
		})
	}
}

// TestFetchFitsStockClient: a client with gRPC's default options (a 4 MiB
// receive limit) fetches 4,200-byte records with default limits: the
// encoded response, framing included, fits, and holds as many records as
// fit; max_bytes smaller than a record still returns one.
func TestFetchFitsStockClient(t *testing.T) {
	n, c := startOne(t, nil)
	ctx := ctxT(t)
	recs := produce4200(t, c, 1000)
	stock := direct(t, n.ClientAddr())
	var got [][]byte
	for len(got) < len(recs) {
		resp, err := stock.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Offset: uint64(len(got))})
		if err != nil {
			t.Fatalf("fetch from %d: %v", len(got), err)
		}
		size := proto.Size(resp)
		if size > clientpb.DefaultFetchResponseBytes {
			t.Fatalf("a %d-byte response", size)
		}
		more := len(got)+len(resp.GetRecords()) < len(recs)
		if len(resp.GetRecords()) == 0 || more && size+4200+3 <= clientpb.DefaultFetchResponseBytes {
			t.Fatalf("%d records (%d bytes) from offset %d: another fits", len(resp.GetRecords()), size, len(got))
		}
		got = append(got, resp.GetRecords()...)
	}
	for i := range recs {
		if !bytes.Equal(got[i], recs[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	resp, err := stock.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Offset: 5, MaxBytes: 100})
	if err != nil || len(resp.GetRecords()) != 1 || !bytes.Equal(resp.GetRecords()[0], recs[5]) {
		t.Fatalf("fetch with max_bytes below one record: %v records, %v", len(resp.GetRecords()), err)
	}
}

// TestFetchAboveStockLimit: a request's max_bytes asks for a response
// above 4 MiB, and the Go client, which raises its receive limit, gets it.
func TestFetchAboveStockLimit(t *testing.T) {
	_, c := startOne(t, nil)
	ctx := ctxT(t)
	recs := produce4200(t, c, 1000)
	resp, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if size := proto.Size(resp); len(resp.GetRecords()) != len(recs) || size <= clientpb.DefaultFetchResponseBytes || size > 8<<20 {
		t.Fatalf("%d records in %d bytes", len(resp.GetRecords()), size)
	}
}

// produce4200 produces n records of 4,200 bytes to partition 1.
func produce4200(t *testing.T, c *client.Client, n int) [][]byte {
	t.Helper()
	recs := records(n, 4200)
	for i := 0; i < n; i += 200 {
		if _, err := c.Produce(ctxT(t), &clientpb.ProduceRequest{PartitionId: 1, Records: recs[i:min(i+200, n)]}); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

// TestOutOfRangeDetail: a fetch past the high watermark is OUT_OF_RANGE
// with the offsets the replica holds.
func TestOutOfRangeDetail(t *testing.T) {
	_, c := startOne(t, nil)
	ctx := ctxT(t)
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(3, 10)}); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Offset: 3}); err != nil || len(resp.GetRecords()) != 0 {
		t.Fatalf("fetch at the high watermark: %v, %v", resp, err)
	}
	_, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Offset: 4})
	d := client.OutOfRange(err)
	if status.Code(err) != codes.OutOfRange || d == nil || d.GetLogStartOffset() != 0 || d.GetHighWatermark() != 3 {
		t.Fatalf("fetch past the high watermark: %v (detail %v)", err, d)
	}
}

// TestResourceExhaustedDetail: every RESOURCE_EXHAUSTED carries its reason
// and a retry hint: a host out of proposal budget, a partition out of
// producer slots.
func TestResourceExhaustedDetail(t *testing.T) {
	for _, tc := range []struct {
		reason     string
		retryAfter uint64
		configure  func(*Config)
		produce    func(context.Context, *client.Client) error
	}{
		{reason: "busy", retryAfter: 100, // one to two ticks of 100 ms
			// A budget smaller than any proposal: the host refuses each.
			configure: func(cfg *Config) {
				fast := cfg.Host
				cfg.Host = func(hc *multiraft.Config) {
					fast(hc)
					hc.ProposalBudgetBytes = 1
					hc.TickInterval = 100 * time.Millisecond
				}
			},
			produce: func(ctx context.Context, c *client.Client) error {
				_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 10)})
				return err
			}},
		{reason: "too_many_producers", retryAfter: 60000,
			configure: func(cfg *Config) { cfg.Partition = partition.Config{MaxProducers: 1} },
			produce: func(ctx context.Context, c *client.Client) error {
				for producer := uint64(1); producer <= 2; producer++ {
					_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 10), ProducerId: producer})
					if err != nil {
						return err
					}
				}
				return nil
			}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			_, c := startOne(t, tc.configure)
			err := tc.produce(ctxT(t), c)
			d := client.Exhausted(err)
			if status.Code(err) != codes.ResourceExhausted || d.GetReason() != tc.reason ||
				d.GetRetryAfterMs() < tc.retryAfter || d.GetRetryAfterMs() > 2*tc.retryAfter {
				t.Fatalf("got %v (detail %v), want RESOURCE_EXHAUSTED, %q, retry after %d ms or up to twice that", err, d, tc.reason, tc.retryAfter)
			}
		})
	}
}

// TestLimitsValidate: zero fields take the defaults; limits that
// contradict each other are refused, naming the field.
func TestLimitsValidate(t *testing.T) {
	var l Limits
	if err := l.Validate(); err != nil || l != DefaultLimits() {
		t.Fatalf("zero limits: %+v, %v", l, err)
	}
	for _, tc := range []struct {
		limits Limits
		want   string
	}{
		{Limits{MaxRecordBytes: -1}, "Limits.MaxRecordBytes -1 is out of range"},
		{Limits{MaxProduceRecords: math.MaxInt32 + 1}, "Limits.MaxProduceRecords 2147483648 is out of range"},
		{Limits{MaxRecordBytes: 2 << 20}, "MaxRecordBytes 2097152 is above MaxProduceBytes 1048576"},
		{Limits{DefaultFetchRecords: 200000}, "DefaultFetchRecords 200000 is above MaxFetchRecords"},
		{Limits{MaxFetchResponseBytes: 128 << 20}, "MaxFetchResponseBytes 134217728 is above 67108864"},
		{Limits{MaxFetchResponseBytes: 1 << 20}, "DefaultFetchResponseBytes 4194304 is above MaxFetchResponseBytes 1048576"},
		// A record must fit a default-size response, framing included.
		{Limits{MaxRecordBytes: 4 << 20, MaxProduceBytes: 4 << 20}, "MaxRecordBytes 4194304: a fetch response holding such a record is over"},
	} {
		if err := tc.limits.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.limits, err, tc.want)
		}
	}
}

// TestHostFitsLimits: the node sizes its host's proposals from the limits
// and refuses a host config that would refuse a request within them.
func TestHostFitsLimits(t *testing.T) {
	nodes, err := LocalCluster(1, t.TempDir(), func(cfg *Config) {
		fastTicks(cfg)
		fast := cfg.Host
		cfg.Host = func(hc *multiraft.Config) {
			fast(hc)
			if want := partition.MaxSize(10000, 1<<20, 1<<20); hc.MaxProposalBytes != want {
				t.Errorf("the host's MaxProposalBytes is %d, want %d", hc.MaxProposalBytes, want)
			}
			hc.MaxProposalBytes = 1 << 20
		}
	})
	for _, n := range nodes {
		_ = n.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "MaxProposalBytes 1048576 is below") {
		t.Fatalf("a host refusing requests within the limits started: %v", err)
	}
}
