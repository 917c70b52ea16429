package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// TestGRPCReconnect: a peer that stops and starts again on its address is
// reached again; while it is down, messages to it are reported
// unreachable; the reconnection is counted.
func TestGRPCReconnect(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	ns := n.start(Config{MaxBackoff: 50 * time.Millisecond}, nil, 1, 2)
	ns[1].Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "the first message", func() bool { got, _ := ns[2].r.count(); return got == 1 })
	if err := ns[2].Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "unreachable reports while the peer is down", func() bool {
		ns[1].Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
		_, u := ns[1].r.count()
		return u > 0
	})
	restarted := n.startOne(2, Config{}, nil, nil)
	waitUntil(t, "a message to the restarted peer", func() bool {
		ns[1].Send(2, []Envelope{msg(1, 3, pb.MsgApp)})
		got, _ := restarted.r.count()
		return got > 0
	})
	if r := testutil.ToFloat64(ns[1].m.Reconnects.WithLabelValues("2")); r < 1 {
		t.Fatalf("reconnects %v", r)
	}
	if up := testutil.ToFloat64(ns[1].m.StreamUp.WithLabelValues("2")); up != 1 {
		t.Fatalf("stream_up %v after reconnecting", up)
	}
}

// TestGRPCHandshake: a call naming another cluster or another node is
// refused and counted, and nothing of it is delivered.
func TestGRPCHandshake(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	ls := n.listen(1, 2, 4)
	n.addrs[3] = n.addrs[4] // node 1 believes node 3 lives where node 4 does
	one := n.startOne(1, Config{}, nil, ls[1])
	two := n.startOne(2, Config{}, func(c *GRPCConfig) { c.ClusterID = 8 }, ls[2])
	four := n.startOne(4, Config{}, nil, ls[4])
	one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "refusal of the other cluster", func() bool {
		return testutil.ToFloat64(two.m.HandshakesRefused.WithLabelValues("cluster_id")) > 0
	})
	one.Send(3, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "refusal of the wrong node", func() bool {
		return testutil.ToFloat64(four.m.HandshakesRefused.WithLabelValues("wrong_node")) > 0
	})
	waitUntil(t, "unreachable reports", func() bool {
		one.Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
		_, u := one.r.count()
		return u > 0
	})
	for _, nd := range []*node{two, four} {
		if got, _ := nd.r.count(); got != 0 {
			t.Fatalf("%d messages delivered through a refused handshake", got)
		}
	}
}

// TestGRPCOversizedFrame: a frame over the receiver's bound ends the
// stream, counted; the sender reconnects and later frames arrive.
func TestGRPCOversizedFrame(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	ns := n.start(Config{MaxBackoff: 50 * time.Millisecond}, func(c *GRPCConfig) { c.MaxRecvMessageBytes = 64 << 10 }, 1, 2)
	big := msg(1, 1, pb.MsgApp)
	big.Message.Entries = []*pb.Entry{{Data: bytes.Repeat([]byte("x"), 128<<10)}}
	ns[1].Send(2, []Envelope{big})
	waitUntil(t, "the oversized frame counted", func() bool {
		return testutil.ToFloat64(ns[2].m.ReceivedDropped.WithLabelValues("1", "oversized_frame")) == 1
	})
	waitUntil(t, "a normal message after it", func() bool {
		ns[1].Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
		got, _ := ns[2].r.count()
		return got > 0
	})
}

// TestGRPCRawClient: what an arbitrary client sends is checked: no
// handshake, then malformed records after a good handshake.
func TestGRPCRawClient(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	n.addrs[1] = "127.0.0.1:1" // the raw client claims to be node 1, a peer
	ns := n.start(Config{}, nil, 2)
	cc, err := grpc.NewClient("passthrough:///"+ns[2].addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := peerpb.NewPeerClient(cc)
	stream, err := client.Raft(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&peerpb.Frame{Messages: []*peerpb.GroupMessage{{GroupId: 1, Message: msg(1, 1, pb.MsgApp).Message}}})
	if _, err := stream.CloseAndRecv(); err == nil {
		t.Fatal("a stream without a handshake was accepted")
	}
	stream, err = client.Raft(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A node of the first protocol version (no version in its handshake)
	// is refused, and told why: it would misread quiesce heartbeats.
	hs := &peerpb.Handshake{ClusterId: 7, FromNode: 1, ToNode: 2}
	if err := stream.Send(&peerpb.Frame{Handshake: hs}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err == nil || !strings.Contains(err.Error(), "speaks peer protocol version 0") {
		t.Fatalf("an old protocol version: %v", err)
	}
	if got := testutil.ToFloat64(ns[2].m.HandshakesRefused.WithLabelValues("protocol_version")); got != 1 {
		t.Fatalf("refused versions: %v", got)
	}
	stream, err = client.Raft(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hs.ProtocolVersion = ProtocolVersion
	if err := stream.Send(&peerpb.Frame{Handshake: hs, Messages: []*peerpb.GroupMessage{
		{GroupId: 1, Message: &pb.Message{Type: pb.MsgStorageAppend.Enum(), From: new(uint64(1)), To: new(uint64(2))}},
		{GroupId: 1, Message: msg(1, 1, pb.MsgApp).Message},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(ns[2].m.ReceivedDropped.WithLabelValues("1", "malformed_message")); got != 1 {
		t.Fatalf("malformed messages counted: %v", got)
	}
	if got, _ := ns[2].r.count(); got != 1 {
		t.Fatalf("%d messages delivered, want the 1 good one", got)
	}
	if got := testutil.ToFloat64(ns[2].m.HandshakesRefused.WithLabelValues("no_handshake")); got != 1 {
		t.Fatalf("refused handshakes: %v", got)
	}
}

// TestGRPCSnapshotThrottle: the snapshot rate holds a send back: S bytes
// at R bytes/s with a burst of one chunk take at least (S-chunk)/R. This
// is the limiter's guarantee, not a speed measurement.
func TestGRPCSnapshotThrottle(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	const chunk, rate, size = 64 << 10, 1 << 20, 320 << 10
	ns := n.start(Config{SnapshotChunkBytes: chunk, SnapshotRateBytes: rate}, nil, 1, 2)
	data := bytes.Repeat([]byte("z"), size)
	start := time.Now()
	if err := sendSnapshot(t, ns[1], 2, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		t.Fatal(err)
	}
	if min := time.Duration(float64(size-chunk) / rate * float64(time.Second)); time.Since(start) < min {
		t.Fatalf("%d bytes at %d bytes/s took %s, the limiter allows no less than %s", size, rate, time.Since(start), min)
	}
	if !bytes.Equal(ns[2].r.snapshots[0], data) {
		t.Fatal("throttled snapshot corrupted")
	}
}

// TestGRPCSnapshotBrokenHalfway: a connection cut in the middle of a
// snapshot fails the send and delivers nothing; the retry arrives whole.
func TestGRPCSnapshotBrokenHalfway(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	ls := n.listen(1, 2)
	p := newProxy(t, n.addrs[2])
	n.addrs[2] = p.addr()
	one := n.startOne(1, Config{SnapshotChunkBytes: 64 << 10, MaxBackoff: 50 * time.Millisecond}, nil, ls[1])
	two := n.startOne(2, Config{}, func(c *GRPCConfig) {}, ls[2])
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	var cut sync.Once
	two.r.onSnapRead = func(read int) {
		if read >= len(data)/2 {
			cut.Do(p.cut)
		}
	}
	writeAll := func(w io.Writer) error { _, err := w.Write(data); return err }
	if err := sendSnapshot(t, one, 2, writeAll); err == nil {
		t.Fatal("a snapshot cut halfway reported success")
	}
	if len(two.r.snapshots) != 0 {
		t.Fatal("a snapshot cut halfway was taken")
	}
	waitUntil(t, "a retry that arrives whole", func() bool { return sendSnapshot(t, one, 2, writeAll) == nil })
	if len(two.r.snapshots) != 1 || !bytes.Equal(two.r.snapshots[0], data) {
		t.Fatalf("%d snapshots taken after the retry", len(two.r.snapshots))
	}
}

// proxy forwards TCP connections to a target and can cut them all.
type proxy struct {
	t      *testing.T
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, lis: l, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { _ = l.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(out, in); _ = out.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(in, out); _ = in.Close() }()
	}
}

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestGRPCMutualTLS: with the right certificates traffic flows; a peer
// with no certificate, with one from another CA, or with one naming
// another node is refused, logged and counted, and delivers nothing.
func TestGRPCMutualTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	cfg := func(c tls.Certificate, pool *x509.CertPool) func(*GRPCConfig) {
		return func(g *GRPCConfig) { g.TLS = &TLSConfig{Certificate: c, CA: pool} }
	}
	n := newTestNet(t, kindGRPC)
	ls := n.listen(1, 2, 3)
	one := n.startOne(1, Config{}, cfg(ca.leaf(t, 7, 1), ca.pool), ls[1])
	two := n.startOne(2, Config{}, cfg(ca.leaf(t, 7, 2), ca.pool), ls[2])
	one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "traffic over mutual TLS", func() bool { got, _ := two.r.count(); return got == 1 })
	if _, err := one.Admin(context.Background(), 2, &peerpb.AdminRequest{Request: &peerpb.AdminRequest_CreateReplica{
		CreateReplica: &peerpb.CreateReplica{GroupId: 1, Members: []uint64{1, 2}}}}); err != nil {
		t.Fatalf("admin call over mutual TLS: %v", err)
	}

	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		pool   *x509.CertPool
		reason string
	}{
		{"no certificate", tls.Certificate{}, ca.pool, "tls"},
		{"another CA", other.leaf(t, 7, 3), ca.pool, "tls"},
		{"another node's certificate", ca.leaf(t, 7, 1), ca.pool, "tls_identity"},
		{"a node outside the peer set", ca.leaf(t, 7, 4), ca.pool, "unknown_peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(two.m.HandshakesRefused.WithLabelValues(tc.reason))
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			id := NodeID(3)
			if tc.reason == "unknown_peer" {
				id = 4 // the CA signed its certificate, but no peer map names it
			}
			bad := n.startOne(id, Config{}, cfg(tc.cert, tc.pool), l)
			defer bad.Close()
			waitUntil(t, "the refusal", func() bool {
				bad.Send(2, []Envelope{msg(9, 1, pb.MsgApp)})
				return testutil.ToFloat64(two.m.HandshakesRefused.WithLabelValues(tc.reason)) > before
			})
			for _, e := range two.r.received() {
				if e.GroupID == 9 {
					t.Fatal("a refused peer's message was delivered")
				}
			}
		})
	}
	_ = ls[3].Close()

	// The client checks the server too: node 1 dialling "node 2" at an
	// address where node 3 answers refuses it.
	l3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	impostor := n.startOne(3, Config{}, cfg(ca.leaf(t, 7, 3), ca.pool), l3)
	n2 := newTestNet(t, kindGRPC)
	ls1 := n2.listen(1)
	n2.addrs[2] = impostor.addr
	fooled := n2.startOne(1, Config{}, cfg(ca.leaf(t, 7, 1), ca.pool), ls1[1])
	waitUntil(t, "the client's refusal", func() bool {
		fooled.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
		_, u := fooled.r.count()
		return u > 0
	})
	if got, _ := impostor.r.count(); got != 0 {
		t.Fatal("a client sent to a server whose certificate names another node")
	}
}

// testCA is a certificate authority made for one test run.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flotilla test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a node certificate naming flotilla://<cluster>/node/<node>.
func (ca *testCA) leaf(t *testing.T, cluster uint64, node NodeID) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(NodeURI(cluster, node))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(node) + 100), Subject: pkix.Name{CommonName: u.String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// chunkStream replays chunks as a snapshot stream's receiving end.
type chunkStream struct {
	peerpb.Peer_SnapshotServer
	chunks []*peerpb.SnapshotChunk
}

func (s *chunkStream) Recv() (*peerpb.SnapshotChunk, error) {
	if len(s.chunks) == 0 {
		return nil, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}

func (s *chunkStream) Send(*peerpb.SnapshotReply) error { return nil }

// TestChunkReader: the reader reaches EOF only after a last chunk whose
// length and CRC match; a corrupted chunk, a wrong length or a stream that
// ends early is an error, never a short snapshot.
func TestChunkReader(t *testing.T) {
	data := []byte("the state machine's data, in two chunks")
	crc := crc32.Checksum(data, castagnoli)
	read := func(chunks ...*peerpb.SnapshotChunk) ([]byte, error) {
		r := &chunkReader{stream: &chunkStream{chunks: chunks}}
		return io.ReadAll(r)
	}
	a, b := data[:10], data[10:]
	got, err := read(&peerpb.SnapshotChunk{Data: a}, &peerpb.SnapshotChunk{Data: b}, &peerpb.SnapshotChunk{Last: true, TotalBytes: uint64(len(data)), Crc32C: crc})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("whole snapshot: %q, %v", got, err)
	}
	corrupt := append([]byte(nil), b...)
	corrupt[3] ^= 1
	if _, err := read(&peerpb.SnapshotChunk{Data: a}, &peerpb.SnapshotChunk{Data: corrupt}, &peerpb.SnapshotChunk{Last: true, TotalBytes: uint64(len(data)), Crc32C: crc}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupted chunk: %v", err)
	}
	if _, err := read(&peerpb.SnapshotChunk{Data: a}, &peerpb.SnapshotChunk{Last: true, TotalBytes: uint64(len(data)), Crc32C: crc}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("missing chunk: %v", err)
	}
	if _, err := read(&peerpb.SnapshotChunk{Data: a}, &peerpb.SnapshotChunk{Data: b}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream ended before the last chunk: %v", err)
	}
}

// TestGRPCPeerSetAndRevocation: a node dropped from the peer set is
// refused from its next frame on, though its stream was open; put back,
// it is heard again. A revoked certificate is refused the same way, and
// at the TLS handshake when the peer reconnects.
func TestGRPCPeerSetAndRevocation(t *testing.T) {
	ca := newTestCA(t)
	cert2 := ca.leaf(t, 7, 2)
	cfg := func(c tls.Certificate) func(*GRPCConfig) {
		return func(g *GRPCConfig) { g.TLS = &TLSConfig{Certificate: c, CA: ca.pool} }
	}
	n := newTestNet(t, kindGRPC)
	ls := n.listen(1, 2)
	one := n.startOne(1, Config{}, cfg(ca.leaf(t, 7, 1)), ls[1])
	two := n.startOne(2, Config{}, cfg(cert2), ls[2])
	g2 := two.Transport.(*GRPC)
	delivered := func() int { got, _ := two.r.count(); return got }
	refused := func(reasons ...string) float64 {
		var sum float64
		for _, r := range reasons {
			sum += testutil.ToFloat64(two.m.HandshakesRefused.WithLabelValues(r))
		}
		return sum
	}
	flowing := func(what string) {
		t.Helper()
		before := delivered()
		waitUntil(t, what, func() bool {
			one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
			return delivered() > before
		})
	}
	cutOff := func(what string, reasons ...string) {
		t.Helper()
		before := refused(reasons...)
		waitUntil(t, what, func() bool {
			one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
			return refused(reasons...) > before
		})
		// Only the data lane's stream carries these messages, and it
		// checks its sender before each frame: from its refusal on,
		// nothing more is delivered.
		stuck := delivered()
		waitUntil(t, "more refusals", func() bool {
			one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)}) // sends while the peer is down are dropped: keep trying
			return refused(reasons...) > before+1
		})
		if got := delivered(); got != stuck {
			t.Fatalf("%s: %d messages delivered after the refusal", what, got-stuck)
		}
	}
	flowing("traffic between peers")

	g2.SetPeers(map[NodeID]string{2: n.addrs[2]})
	cutOff("node 1 dropped from the peer set", "unknown_peer")
	g2.SetPeers(map[NodeID]string{1: n.addrs[1], 2: n.addrs[2]})
	flowing("node 1 back in the peer set")

	if err := g2.SetTLS(&TLSConfig{Certificate: cert2, CA: ca.pool, Revoked: map[string]bool{"101": true}}); err != nil {
		t.Fatal(err)
	}
	cutOff("node 1's certificate revoked", "tls_identity", "tls")
	if err := g2.SetTLS(&TLSConfig{Certificate: cert2, CA: ca.pool}); err != nil {
		t.Fatal(err)
	}
	flowing("node 1's certificate good again")
	if err := g2.SetTLS(nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("turning TLS off while running: %v", err)
	}
}

// TestGRPCIdleConnectionClosed: a connection that sent the HTTP/2
// preface and nothing else is closed after the idle timeout; one over
// the connection limit is closed at once. Both show in the metrics.
func TestGRPCIdleConnectionClosed(t *testing.T) {
	n := newTestNet(t, kindGRPC)
	ns := n.start(Config{}, func(g *GRPCConfig) {
		g.IdleTimeout = 200 * time.Millisecond
		g.MaxConnections = 2
	}, 2)
	open := func() float64 { return testutil.ToFloat64(ns[2].m.ConnectionsOpen) }
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ns[2].addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
		return c
	}
	a, b := dial(), dial()
	waitUntil(t, "two connections open", func() bool { return open() == 2 })
	c := dial()
	waitUntil(t, "the third refused", func() bool {
		return testutil.ToFloat64(ns[2].m.HandshakesRefused.WithLabelValues("connection_limit")) == 1
	})
	for _, conn := range []net.Conn{a, b, c} {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Closed: EOF, or a reset if the server closed with unread data.
		if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the server did not close an idle connection: %v", err)
		}
	}
	waitUntil(t, "no connection open", func() bool { return open() == 0 })
}

// TestGRPCUnauthenticatedConnectionsMakeRoom: with TLS, connections that
// are not a peer's hold every slot of the connection limit (ones that
// never handshake, or that do with a certificate of a node outside the
// peer set); a peer that connects then still gets in, and the oldest of
// them is closed for it.
func TestGRPCUnauthenticatedConnectionsMakeRoom(t *testing.T) {
	ca := newTestCA(t)
	stranger := ca.leaf(t, 7, 9) // node 9 is in no one's peer set
	for _, tc := range []struct {
		name string
		dial func(addr string) (net.Conn, error)
	}{
		{"no handshake", func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }},
		{"a certificate outside the peer set", func(addr string) (net.Conn, error) {
			return tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{stranger}, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := func(node NodeID) func(*GRPCConfig) {
				return func(g *GRPCConfig) {
					g.TLS = &TLSConfig{Certificate: ca.leaf(t, 7, node), CA: ca.pool}
					g.MaxConnections = 4
					g.HandshakeTimeout = time.Minute // the connections outlast the wait
				}
			}
			n := newTestNet(t, kindGRPC)
			ls := n.listen(1, 2)
			one := n.startOne(1, Config{}, cfg(1), ls[1])
			two := n.startOne(2, Config{}, cfg(2), ls[2])
			var held []net.Conn
			for range 4 {
				c, err := tc.dial(two.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				held = append(held, c)
			}
			waitUntil(t, "four connections holding every slot", func() bool { return testutil.ToFloat64(two.m.ConnectionsOpen) == 4 })
			waitUntil(t, "the peer's traffic delivered", func() bool {
				one.Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
				got, _ := two.r.count()
				return got > 0
			})
			_ = held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, held[0]); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the oldest connection that is not a peer's was not closed: %v", err)
			}
			if got := testutil.ToFloat64(two.m.HandshakesRefused.WithLabelValues("connection_limit")); got < 1 {
				t.Fatalf("connection_limit = %v, want the eviction counted", got)
			}
		})
	}
}
