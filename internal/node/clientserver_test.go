package node

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/transport"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// TestUnmarshalProduce: the client server's produce decoder reads what
// protobuf reads (unknown fields skipped, empty records kept), keeps at
// most its limit of records, and refuses what protobuf refuses.
func TestUnmarshalProduce(t *testing.T) {
	for _, req := range []*clientpb.ProduceRequest{
		{},
		{PartitionId: 7, Records: [][]byte{[]byte("a"), {}, []byte("ccc")}},
		{PartitionId: math.MaxUint64, ProducerId: math.MaxUint64, Sequence: math.MaxUint64 - 1, Records: make([][]byte, 5)},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 9, protowire.BytesType) // a field of a later version
		b = protowire.AppendBytes(b, []byte("unknown"))
		var want, got clientpb.ProduceRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		want.ProtoReflect().SetUnknown(nil)
		if err := unmarshalProduce(b, &got, 100); err != nil || !proto.Equal(&got, &want) {
			t.Fatalf("decoded %v, %v; want %v", &got, err, &want)
		}
		var capped clientpb.ProduceRequest
		if err := unmarshalProduce(b, &capped, 2); err != nil || len(capped.Records) != min(2, len(req.Records)) {
			t.Fatalf("capped at 2: %d records, %v", len(capped.Records), err)
		}
	}
	good, _ := proto.Marshal(&clientpb.ProduceRequest{PartitionId: 1, Records: [][]byte{[]byte("abc")}})
	for _, bad := range [][]byte{good[:len(good)-1], {0x12, 0x05, 'a'}, {0x08}} {
		var p clientpb.ProduceRequest
		if proto.Unmarshal(bad, &p) == nil || unmarshalProduce(bad, &clientpb.ProduceRequest{}, 100) == nil {
			t.Fatalf("%x: a truncated request decoded", bad)
		}
	}
}

// blockingFetch is a Fetch handler busy building its response (as one
// reading Pebble is), not watching its context.
type blockingFetch struct {
	clientpb.UnimplementedPartitionsServer
	started chan context.Context
	release chan struct{}
}

func (b *blockingFetch) Fetch(ctx context.Context, _ *clientpb.FetchRequest) (*clientpb.FetchResponse, error) {
	b.started <- ctx
	<-b.release
	return &clientpb.FetchResponse{}, nil
}

// TestBudgetHeldUntilHandlerEnds: a client that cancels its call ends the
// stream's context at once, while the handler still runs and holds what
// the call was charged for: the charge stays until the RPC ends.
func TestBudgetHeldUntilHandlerEnds(t *testing.T) {
	limits := DefaultLimits()
	b := DefaultBudget()
	if err := b.validate(&limits); err != nil {
		t.Fatal(err)
	}
	s := &clientServer{n: &Node{cfg: Config{Budget: b, Limits: limits}}, m: newClientMetrics(prometheus.NewRegistry()), quotas: &quotas{},
		budget: &inFlight{max: b.MaxInFlightBytes, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "inflight"})},
		auth:   &authorizer{tls: func() *transport.TLSConfig { return nil }}}
	srv := grpc.NewServer(grpc.InTapHandle(s.tap), grpc.UnaryInterceptor(s.intercept), grpc.StatsHandler(s))
	impl := &blockingFetch{started: make(chan context.Context, 1), release: make(chan struct{})}
	clientpb.RegisterPartitionsServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = clientpb.NewPartitionsClient(conn).Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, MaxBytes: 64 << 20})
	}()
	hctx := <-impl.started
	charged := s.budget.used.Load()
	if charged < 64<<20 {
		t.Fatalf("a 64 MiB fetch charged %d bytes", charged)
	}
	// The release tied to the stream's context is disarmed once the
	// handler runs (stop reports false: nothing left to stop).
	if callOf(hctx).stop() {
		t.Fatal("a running handler's charge would go back when its client cancels")
	}
	cancel()
	<-done // the client is gone; its handler is not
	<-hctx.Done()
	if got := s.budget.used.Load(); got != charged {
		t.Fatalf("the charge fell from %d to %d while the handler still ran", charged, got)
	}
	close(impl.release)
	await.Until(t, 5*time.Second, "the charge given back at the RPC's end", func() bool { return s.budget.used.Load() == 0 })
}
