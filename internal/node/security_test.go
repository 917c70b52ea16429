package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/certs"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/proto/clientpb"
	"github.com/flotilla-io/flotilla/transport"
)

// tlsCluster starts three nodes with mutual TLS from one CA.
func tlsCluster(t *testing.T) ([]*Node, *certs.CA) {
	t.Helper()
	ca, err := certs.NewCA(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := LocalCluster(3, t.TempDir(), func(cfg *Config) {
		fastTicks(cfg)
		pair, err := ca.Node(cfg.NodeID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = &transport.TLSConfig{Certificate: pair.TLS(), CA: ca.Pool()}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	})
	return nodes, ca
}

// clientAs connects to the cluster with a certificate.
func clientAs(t *testing.T, nodes []*Node, ca *certs.CA, pair *certs.Pair) *client.Client {
	t.Helper()
	cfg := &transport.TLSConfig{Certificate: pair.TLS(), CA: ca.Pool()}
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.ClientAddr())
	}
	c, err := client.New(eps, cfg.ClientCredentials(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustClient(t *testing.T, ca *certs.CA, name string, roles ...string) *certs.Pair {
	t.Helper()
	p, err := ca.Client(name, roles, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func denied(nodes []*Node) float64 {
	var sum float64
	for _, n := range nodes {
		sum += n.Metric("flotilla_client_denied_total")
	}
	return sum
}

// TestClientRoles: with mutual TLS, each call needs its role. A read-only
// client fetches, describes and lists, and is refused every produce and
// admin call with PERMISSION_DENIED naming the role; a producer cannot
// read; a certificate without a client URI (or a node's) can do nothing;
// a revoked client is refused at its next call on a connection it opened
// before. Every refusal is counted.
func TestClientRoles(t *testing.T) {
	nodes, ca := tlsCluster(t)
	ctx := ctxT(t)
	admin := clientAs(t, nodes, ca, mustClient(t, ca, "ops", "admin", "produce", "read"))
	readerPair := mustClient(t, ca, "dashboard", "read")
	reader := clientAs(t, nodes, ca, readerPair)
	producer := clientAs(t, nodes, ca, mustClient(t, ca, "ingest", "produce"))
	nobody := clientAs(t, nodes, ca, mustClient(t, ca, "nobody"))
	nodePair, err := ca.Node(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	asNode := clientAs(t, nodes, ca, nodePair)

	if err := admin.CreatePartition(ctx, 5, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 5, Records: [][]byte{[]byte("r")}}); err != nil {
		t.Fatalf("the producer: %v", err)
	}
	if _, err := reader.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 5, Linearizable: true}); err != nil {
		t.Fatalf("the reader's fetch: %v", err)
	}
	if _, err := reader.Describe(ctx, 5); err != nil {
		t.Fatalf("the reader's describe: %v", err)
	}
	if _, err := reader.List(ctx); err != nil {
		t.Fatalf("the reader's list: %v", err)
	}

	calls := map[string]func(c *client.Client) error{
		"produce": func(c *client.Client) error {
			_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 5, Records: [][]byte{[]byte("x")}})
			return err
		},
		"fetch": func(c *client.Client) error {
			_, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 5})
			return err
		},
		"describe": func(c *client.Client) error { _, err := c.Describe(ctx, 5); return err },
		"list":     func(c *client.Client) error { _, err := c.List(ctx); return err },
		"create":   func(c *client.Client) error { return c.CreatePartition(ctx, 6, []uint64{1, 2, 3}) },
		"delete":   func(c *client.Client) error { return c.DeletePartition(ctx, 5) },
		"transfer": func(c *client.Client) error { return c.TransferLeadership(ctx, 5, 2) },
		"replicas": func(c *client.Client) error { return c.ChangeReplicas(ctx, 5, nil, []uint64{3}) },
	}
	need := map[string]string{"produce": "produce", "fetch": "read", "describe": "read", "list": "read",
		"create": "admin", "delete": "admin", "transfer": "admin", "replicas": "admin"}
	for _, tc := range []struct {
		who    string
		c      *client.Client
		refuse []string
	}{
		{"the reader", reader, []string{"produce", "create", "delete", "transfer", "replicas"}},
		{"the producer", producer, []string{"fetch", "describe", "list", "create", "delete", "transfer", "replicas"}},
		{"a client with no role", nobody, []string{"produce", "fetch", "list", "delete"}},
		{"a node's certificate", asNode, []string{"produce", "fetch", "delete"}},
	} {
		for _, call := range tc.refuse {
			before := denied(nodes)
			err := calls[call](tc.c)
			want := fmt.Sprintf("lacks role %q", need[call])
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s, %s: %v, want PERMISSION_DENIED naming the role (%s)", tc.who, call, err, want)
			}
			if denied(nodes) <= before {
				t.Fatalf("%s, %s: the refusal was not counted", tc.who, call)
			}
		}
	}
	// Nothing a refused call asked for happened.
	info, err := admin.Describe(ctx, 5)
	if err != nil || len(info.GetReplicaNodeIds()) != 3 {
		t.Fatalf("partition 5 after the refusals: %v, %v", info, err)
	}
	r, err := admin.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 5, Linearizable: true})
	if err != nil || len(r.GetRecords()) != 1 {
		t.Fatalf("partition 5's records after the refusals: %v, %v", r, err)
	}

	// A certificate that names another node is not taken: its peers
	// would refuse this one.
	other := *nodes[0].trans.TLS()
	wrong, err := ca.Node(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other.Certificate = wrong.TLS()
	if err := nodes[0].SetTLS(&other); err == nil || !strings.Contains(err.Error(), "does not name this node") {
		t.Fatalf("node 1 took node 2's certificate: %v", err)
	}

	// Revoked: the reader's open connections are refused at its next call.
	for _, n := range nodes {
		cfg := *n.trans.TLS()
		cfg.Revoked = map[string]bool{readerPair.Cert.SerialNumber.String(): true}
		if err := n.SetTLS(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reader.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 5}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked client's fetch: %v", err)
	}
	if err := admin.DeletePartition(ctx, 5); err != nil {
		t.Fatalf("the admin's delete: %v", err)
	}
}

// TestPlaintextNeedsInsecure: without TLS a node listens on loopback only,
// unless told it may do otherwise; a plaintext node always warns.
func TestPlaintextNeedsInsecure(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		var logged strings.Builder
		var mu sync.Mutex
		n, err := Start(Config{ClusterID: 1, NodeID: 1, ListenAddr: "0.0.0.0:0", ClientListenAddr: "127.0.0.1:0",
			DataDir: t.TempDir(), Insecure: insecure, Logger: newTestLogger(&mu, &logged)})
		if !insecure {
			if err == nil || !strings.Contains(err.Error(), "--insecure") {
				_ = closeNode(n)
				t.Fatalf("plaintext on 0.0.0.0 without Insecure: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = n.Close()
		mu.Lock()
		out := logged.String()
		mu.Unlock()
		if !strings.Contains(out, "running without authentication") {
			t.Fatalf("no warning logged:\n%s", out)
		}
	}
}

func closeNode(n *Node) error {
	if n == nil {
		return nil
	}
	return n.Close()
}

// TestRequestBudget: many concurrent large produce requests: the node
// takes what its in-flight budget allows and refuses the rest at once
// (RESOURCE_EXHAUSTED, reason busy, with a retry hint), so its memory
// grows by no more than the budget plus 64 MiB; a request of a million
// empty records costs its bytes, not a slice header each, and is refused
// by its count.
func TestRequestBudget(t *testing.T) {
	const budget = 16 << 20
	n, _ := startOne(t, func(cfg *Config) {
		cfg.Budget.MaxInFlightBytes = budget
		cfg.Limits.MaxFetchResponseBytes = 4 << 20
	})
	conn, err := grpc.NewClient("passthrough:///"+n.ClientAddr(), grpc.WithTransportCredentials(insecureCreds()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pc := clientpb.NewPartitionsClient(conn)
	ctx := ctxT(t)

	// The requests are for a partition the node does not host: each is
	// read, decoded and answered NotFound, so what the node holds is what
	// it takes in, not what it stores. A low GOGC keeps garbage from
	// passing for memory held.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	base := rss(t)
	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				if r := rss(t); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	// 256 requests of 1,000 records of 1 KiB at once: 256 MiB if all
	// were held together. They are sent from one encoding (rawCodec), so
	// that the clients, in this process too, hold one copy.
	encoded, err := proto.Marshal(&clientpb.ProduceRequest{PartitionId: 99, Records: records(1000, 1<<10)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, busy, other atomic.Int64
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp []byte
			err := conn.Invoke(ctx, "/flotilla.client.v1.Partitions/Produce", &encoded, &resp, grpc.ForceCodecV2(rawCodec{}))
			switch {
			case status.Code(err) == codes.NotFound:
				ok.Add(1) // read and answered
			case status.Code(err) == codes.ResourceExhausted && exhaustedReason(err) == "busy":
				busy.Add(1)
			default:
				other.Add(1)
				t.Errorf("produce: %v", err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	t.Logf("RSS growth %d MiB, %d read, %d busy", (peak.Load()-base)>>20, ok.Load(), busy.Load())
	if busy.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("%d accepted, %d refused busy: want some of each", ok.Load(), busy.Load())
	}
	if got := n.Metric("flotilla_client_exhausted_total"); got != float64(busy.Load()) {
		t.Fatalf("exhausted_total = %v, want %d", got, busy.Load())
	}
	if growth := peak.Load() - base; growth > budget+64<<20 {
		t.Fatalf("RSS grew by %d MiB, over the budget plus 64 MiB", growth>>20)
	}
	await.Until(t, 10*time.Second, "the budget given back", func() bool { return n.Metric("flotilla_client_inflight_bytes") == 0 })

	// A million empty records in one request (about 2 MB): refused by
	// count; its decoding kept at most the limit plus one.
	// Over MaxRequestBytes it is refused unread.
	_, err = pc.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: make([][]byte, 1<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a million empty records: %v", err)
	}
	await.Until(t, 5*time.Second, "the oversized request counted", func() bool {
		return metricLabel(t, n, "flotilla_client_exhausted_total", "reason", "request_too_large") == 1
	})
	half := make([][]byte, 400000) // 800 KB, within MaxRequestBytes
	if _, err := pc.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: half}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "more than MaxProduceRecords") {
		t.Fatalf("400,000 empty records: %v", err)
	}
}

// TestClientQuota: a client over its produce quota is refused with
// RESOURCE_EXHAUSTED (reason quota) and how long to wait.
func TestClientQuota(t *testing.T) {
	n, c := startOne(t, func(cfg *Config) { cfg.Budget.ProduceBytesPerSecond = 1000 })
	ctx := ctxT(t)
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 5000)}); err != nil {
		t.Fatal(err) // within the burst... then in debt
	}
	_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 10)})
	if status.Code(err) != codes.ResourceExhausted || exhaustedReason(err) != "quota" {
		t.Fatalf("over quota: %v", err)
	}
	if d := retryAfter(err); d < time.Second || d > 5*time.Second {
		t.Fatalf("retry after %s, want about 4 s", d)
	}
	if n.Metric("flotilla_client_exhausted_total") != 1 {
		t.Fatal("the refusal was not counted")
	}
}

// TestClientIdleConnectionClosed: a client connection that sends the
// HTTP/2 preface and nothing more is closed after the idle timeout.
func TestClientIdleConnectionClosed(t *testing.T) {
	n, _ := startOne(t, func(cfg *Config) { cfg.Budget.IdleTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", n.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	await.Until(t, 10*time.Second, "the connection counted", func() bool { return n.Metric("flotilla_client_connections_open") >= 1 })
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	// (startOne's client, idle too, goes the same way.)
	await.Until(t, 10*time.Second, "no connection open", func() bool { return n.Metric("flotilla_client_connections_open") == 0 })
}

// metricLabel is the value of a node's counter series with a label.
func metricLabel(t *testing.T, n *Node, name, label, value string) float64 {
	families, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// rss is this process's resident set size in bytes.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("the test measures RSS from /proc/self/statm: %v", err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		t.Fatal(err)
	}
	return resident * int64(os.Getpagesize())
}

func exhaustedReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if re, ok := d.(*clientpb.ResourceExhausted); ok {
			return re.GetReason()
		}
	}
	return ""
}

func retryAfter(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if re, ok := d.(*clientpb.ResourceExhausted); ok {
			return time.Duration(re.GetRetryAfterMs()) * time.Millisecond
		}
	}
	return 0
}

// rawCodec sends and receives encoded messages as they are (*[]byte).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

// newTestLogger logs into b (under mu).
func newTestLogger(mu *sync.Mutex, b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{mu: mu, w: b}, nil))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
