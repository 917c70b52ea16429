package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// GRPCConfig configures the gRPC transport of one node.
type GRPCConfig struct {
	Config
	// ClusterID and NodeID name this node; peers refuse a handshake that
	// names another cluster or another node.
	ClusterID uint64
	NodeID    NodeID
	// Listener, if set, is served (tests pass one on 127.0.0.1:0);
	// otherwise ListenAddr is listened on.
	Listener   net.Listener
	ListenAddr string
	// Peers maps the other nodes to their addresses; SetPeer changes it.
	Peers map[NodeID]string
	// TLS, if set, secures all peer traffic with mutual TLS; SetTLS
	// replaces it. Without it nothing is authenticated: any process that
	// reaches the address can speak for any peer.
	TLS *TLSConfig
	// MaxRecvMessageBytes bounds one inbound frame or chunk. Default 64 MiB.
	MaxRecvMessageBytes int
	// DialTimeout bounds opening a stream to a peer. Default 5 s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds an inbound connection's TLS and HTTP/2
	// handshake. Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes an inbound connection that carried no call for
	// this long (a peer's connection always carries its streams).
	// Default 5 min.
	IdleTimeout time.Duration
	// MaxConnections bounds the inbound connections open at once; more
	// are closed as they arrive, and counted. Default 1024.
	MaxConnections int
}

// GRPC is the production Transport: two long-lived client streams of
// frames to each peer, one for the control lane and one for data (see
// outbox), snapshot streams and admin calls on the same connection,
// optional mutual TLS.
type GRPC struct {
	*core
	cfg        GRPCConfig
	lis        net.Listener
	srv        *grpc.Server
	serveDone  chan struct{}
	serveStart sync.Once
	// tls is the TLS config in force (nil: plaintext); gen counts changes
	// of it and of the peer set, so that open streams check their sender
	// again (see accept).
	tls atomic.Pointer[TLSConfig]
	gen atomic.Uint64
	// sometimes bounds refusal warnings to one a second: whoever reaches
	// the port must not fill the log (they are all counted).
	sometimes rate.Sometimes

	mu struct {
		sync.Mutex
		peers map[NodeID]string
		conns map[NodeID]*grpc.ClientConn
	}
}

var _ Transport = (*GRPC)(nil)

// NewGRPC listens (so Addr is known at once) and prepares the transport;
// Start begins serving.
func NewGRPC(cfg GRPCConfig) (*GRPC, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.NodeID == 0:
		return nil, fmt.Errorf("%w: NodeID is required", ErrInvalidConfig)
	case cfg.Listener == nil && cfg.ListenAddr == "":
		return nil, fmt.Errorf("%w: a Listener or ListenAddr is required", ErrInvalidConfig)
	}
	given := cfg.Config // what the caller left to the defaults, or to the host
	cfg.Config = cfg.Config.withDefaults()
	if cfg.MaxRecvMessageBytes == 0 {
		cfg.MaxRecvMessageBytes = 64 << 20
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = 1024
	}
	t := &GRPC{cfg: cfg, serveDone: make(chan struct{}), sometimes: rate.Sometimes{Interval: time.Second}}
	t.core = newCore(cfg.NodeID, given, t)
	t.cfg.Config = t.core.cfg // one set of metrics and defaults for both
	t.mu.peers = make(map[NodeID]string)
	t.mu.conns = make(map[NodeID]*grpc.ClientConn)
	for id, addr := range cfg.Peers {
		if id != cfg.NodeID {
			t.mu.peers[id] = addr
			t.addPeer(id)
		}
	}
	t.lis = cfg.Listener
	if t.lis == nil {
		lis, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			t.core.close()
			return nil, fmt.Errorf("transport: listen on %s: %w", cfg.ListenAddr, err)
		}
		t.lis = lis
	}
	lis := LimitListener(t.lis, cfg.MaxConnections, t.m.ConnectionsOpen, t.m.HandshakesRefused.WithLabelValues("connection_limit"))
	t.lis = lis
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMessageBytes),
		grpc.WaitForHandlers(true),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.IdleTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLS != nil {
		t.tls.Store(cfg.TLS)
		lis.EvictUnauthenticated()
		opts = append(opts, grpc.Creds(CountingCreds{TransportCredentials: ServerCredentials(t.tls.Load), Fail: func(err error) {
			t.m.HandshakesRefused.WithLabelValues("tls").Inc()
			t.sometimes.Do(func() { t.log().Warn("refused a peer connection at the TLS handshake", "err", err) })
		}, Authenticated: func(conn net.Conn, leaf *x509.Certificate) {
			// Only a peer's connection is kept from eviction: any other
			// certificate the CA signed (a client's, a node's outside the
			// peer set) could otherwise hold every slot.
			for _, id := range namedNodes(leaf, t.cfg.ClusterID) {
				if t.isPeer(id) {
					lis.Authenticated(conn)
					return
				}
			}
		}}))
	}
	t.srv = grpc.NewServer(opts...)
	peerpb.RegisterPeerServer(t.srv, &peerServer{t: t})
	return t, nil
}

// RegisterService serves another gRPC service on the transport's server,
// under the peer server's limits. Call it before Start. (The reference
// node serves its clients on a server of their own.)
func (t *GRPC) RegisterService(desc *grpc.ServiceDesc, impl any) {
	t.srv.RegisterService(desc, impl)
}

// Addr returns the address the transport listens on.
func (t *GRPC) Addr() string { return t.lis.Addr().String() }

// SetPeer sets (or changes) a peer's address.
func (t *GRPC) SetPeer(id NodeID, addr string) {
	if id == t.cfg.NodeID {
		return
	}
	t.mu.Lock()
	old, had := t.mu.peers[id]
	t.mu.peers[id] = addr
	var stale *grpc.ClientConn
	if had && old != addr {
		stale = t.mu.conns[id]
		delete(t.mu.conns, id)
	}
	t.mu.Unlock()
	if stale != nil {
		_ = stale.Close() // its streams fail; the sender reconnects to the new address
	}
	t.addPeer(id)
}

// SetPeers replaces the peer set and the peers' addresses: a node left
// out is refused from now on (its open streams end before their next
// frame) and no longer sent to. The node's own ID is ignored.
func (t *GRPC) SetPeers(peers map[NodeID]string) {
	t.mu.Lock()
	var stale []*grpc.ClientConn
	for id := range t.mu.peers {
		if _, keep := peers[id]; !keep {
			delete(t.mu.peers, id)
			if cc := t.mu.conns[id]; cc != nil {
				stale = append(stale, cc)
				delete(t.mu.conns, id)
			}
		}
	}
	t.mu.Unlock()
	t.gen.Add(1)
	for _, cc := range stale {
		_ = cc.Close()
	}
	for id, addr := range peers {
		t.SetPeer(id, addr)
	}
}

// isPeer reports whether a node is in the peer set.
func (t *GRPC) isPeer(id NodeID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.mu.peers[id]
	return ok
}

// SetTLS replaces the certificate, CA and revocation list (a rotation, a
// revocation): new connections use them, and every open stream is
// checked against them before its next frame. A transport started
// without TLS cannot switch to it.
func (t *GRPC) SetTLS(c *TLSConfig) error {
	if c == nil || t.tls.Load() == nil {
		return fmt.Errorf("%w: TLS can be replaced, not turned on or off, while the transport runs", ErrInvalidConfig)
	}
	t.tls.Store(c)
	t.gen.Add(1)
	// Outgoing connections were made with the old config: they are made
	// again, and the peers checked again.
	t.mu.Lock()
	conns := t.mu.conns
	t.mu.conns = make(map[NodeID]*grpc.ClientConn)
	t.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	return nil
}

// TLS returns the TLS config in force, nil for plaintext.
func (t *GRPC) TLS() *TLSConfig { return t.tls.Load() }

// Start begins serving peers and delivering to h.
func (t *GRPC) Start(h Handler, env Env) error {
	if err := t.core.start(h, env); err != nil {
		return err
	}
	t.serveStart.Do(func() {
		go func() {
			defer close(t.serveDone)
			_ = t.srv.Serve(t.lis) // returns when Stop closes the listener
		}()
	})
	return nil
}

// Close stops serving, closes every stream and connection and waits for
// every goroutine.
func (t *GRPC) Close() error {
	t.serveStart.Do(func() { close(t.serveDone); _ = t.lis.Close() }) // never served
	t.core.close()
	t.srv.Stop() // cancels inbound streams and waits for their handlers (WaitForHandlers)
	<-t.serveDone
	t.core.receiving.Wait()
	t.mu.Lock()
	conns := t.mu.conns
	t.mu.conns = map[NodeID]*grpc.ClientConn{}
	t.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	return nil
}

// conn returns the client connection to a peer, creating it on first use.
func (t *GRPC) conn(to NodeID) (*grpc.ClientConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cc := t.mu.conns[to]; cc != nil {
		return cc, nil
	}
	addr, ok := t.mu.peers[to]
	if !ok {
		return nil, fmt.Errorf("%w: node %d has no address", ErrUnknownPeer, to)
	}
	creds := insecure.NewCredentials()
	if t.tls.Load() != nil {
		creds = clientCreds(t.tls.Load, t.cfg.ClusterID, to)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: minBackoff, Multiplier: 2, Jitter: 0.25, MaxDelay: t.cfg.MaxBackoff},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// The receiver bounds what it takes (and counts what it refuses).
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(t.cfg.MaxRecvMessageBytes)),
	)
	if err != nil {
		return nil, fmt.Errorf("transport: connection to node %d at %s: %w", to, addr, err)
	}
	t.mu.conns[to] = cc
	return cc, nil
}

func (t *GRPC) handshake(to NodeID) *peerpb.Handshake {
	return &peerpb.Handshake{ClusterId: t.cfg.ClusterID, FromNode: t.cfg.NodeID, ToNode: to, ProtocolVersion: ProtocolVersion}
}

// dial opens the Raft stream to a peer and sends the handshake.
func (t *GRPC) dial(ctx context.Context, to NodeID) (link, error) {
	cc, err := t.conn(to)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	// Opening waits for the connection; the wait is bounded, the stream
	// is not.
	timer := time.AfterFunc(t.cfg.DialTimeout, cancel)
	stream, err := peerpb.NewPeerClient(cc).Raft(sctx, grpc.CallContentSubtype(codecName))
	if err == nil {
		err = stream.Send(&peerpb.Frame{Handshake: t.handshake(to)})
	}
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("transport: open stream to node %d: %w", to, err)
	}
	return &grpcLink{stream: stream, cancel: cancel}, nil
}

type grpcLink struct {
	stream peerpb.Peer_RaftClient
	cancel context.CancelFunc
}

func (l *grpcLink) send(frame *[]byte) error {
	err := l.stream.SendMsg(&outFrame{buf: frame})
	if errors.Is(err, io.EOF) {
		// The peer ended the stream; its status says why.
		_, err = l.stream.CloseAndRecv()
		if err == nil {
			err = io.EOF
		}
	}
	return err
}

func (l *grpcLink) close() {
	_ = l.stream.CloseSend()
	l.cancel()
}

// admin makes a control call on a peer.
func (t *GRPC) admin(ctx context.Context, to NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	cc, err := t.conn(to)
	if err != nil {
		return nil, err
	}
	req.Handshake = t.handshake(to)
	resp, err := peerpb.NewPeerClient(cc).Admin(ctx, req)
	if err != nil {
		return nil, remoteError(to, err)
	}
	return resp, nil
}

// remoteError turns a call's status into an error that says whether the
// peer could be reached.
func remoteError(to NodeID, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: node %d: %s", ErrUnknownPeer, to, st.Message())
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: node %d: %s", ErrExhausted, to, st.Message())
	default:
		return fmt.Errorf("%w: node %d: %s", ErrRefused, to, st.Message())
	}
}

// peerServer serves the Peer service for a GRPC transport.
type peerServer struct {
	peerpb.UnimplementedPeerServer
	t *GRPC
}

// accept checks a call's handshake: the caller is a node of the peer set
// and, with TLS, its certificate (checked against the CA and revocation
// list in force) names the node it claims to be. It returns the caller.
func (t *GRPC) accept(ctx context.Context, hs *peerpb.Handshake) (NodeID, error) {
	refuse := func(reason, format string, args ...any) (NodeID, error) {
		t.m.HandshakesRefused.WithLabelValues(reason).Inc()
		msg := fmt.Sprintf(format, args...)
		t.sometimes.Do(func() { t.log().Warn("refused a peer call", "reason", reason, "detail", msg) })
		return 0, status.Error(codes.PermissionDenied, msg)
	}
	switch {
	case hs == nil:
		return refuse("no_handshake", "no handshake")
	case hs.GetClusterId() != t.cfg.ClusterID:
		return refuse("cluster_id", "cluster %d, this is cluster %d", hs.GetClusterId(), t.cfg.ClusterID)
	case hs.GetToNode() != t.cfg.NodeID:
		return refuse("wrong_node", "call for node %d reached node %d", hs.GetToNode(), t.cfg.NodeID)
	case hs.GetFromNode() == 0 || hs.GetFromNode() == t.cfg.NodeID:
		return refuse("bad_sender", "sender node %d", hs.GetFromNode())
	case !t.isPeer(hs.GetFromNode()):
		return refuse("unknown_peer", "node %d is not in node %d's peer set", hs.GetFromNode(), t.cfg.NodeID)
	case hs.GetProtocolVersion() != ProtocolVersion:
		// An older peer would misread quiesce heartbeats and liveness
		// records; a newer one may send what this node cannot read.
		return refuse("protocol_version", "node %d speaks peer protocol version %d, node %d speaks %d: "+
			"run one Flotilla version across the cluster", hs.GetFromNode(), hs.GetProtocolVersion(), t.cfg.NodeID, ProtocolVersion)
	}
	if c := t.tls.Load(); c != nil {
		p, _ := peer.FromContext(ctx)
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.PeerCertificates) == 0 {
			return refuse("tls_identity", "no client certificate")
		}
		leaf, err := c.VerifyPeer(info.State.PeerCertificates, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return refuse("tls_identity", "node %d: %v", hs.GetFromNode(), err)
		}
		if err := hasURI(leaf, NodeURI(t.cfg.ClusterID, hs.GetFromNode())); err != nil {
			return refuse("tls_identity", "node %d: %v", hs.GetFromNode(), err)
		}
	}
	return hs.GetFromNode(), nil
}

// recheck accepts an open stream's caller again if the peer set or the
// TLS config changed since gen (is it still a peer, its certificate still
// good?), and moves gen on.
func (t *GRPC) recheck(ctx context.Context, hs *peerpb.Handshake, gen *uint64) error {
	g := t.gen.Load()
	if g == *gen {
		return nil
	}
	if _, err := t.accept(ctx, hs); err != nil {
		return err
	}
	*gen = g
	return nil
}

// Raft receives a peer's frames until the stream ends.
func (s *peerServer) Raft(stream peerpb.Peer_RaftServer) error {
	t := s.t
	frame, err := recvFrame(stream)
	if err != nil {
		return err
	}
	hs := frame.handshake
	gen := t.gen.Load()
	from, err := t.accept(stream.Context(), hs)
	if err != nil {
		return err
	}
	if len(frame.envs)+frame.badHB+frame.badMsg == 0 {
		frame = nil // only the handshake
	}
	for {
		if err := t.recheck(stream.Context(), hs, &gen); err != nil {
			return err
		}
		if frame != nil {
			t.receiveFrame(from, frame)
		}
		if frame, err = recvFrame(stream); err != nil {
			if errors.Is(err, io.EOF) {
				return stream.SendAndClose(&peerpb.RaftClosed{})
			}
			if status.Code(err) == codes.ResourceExhausted {
				t.m.ReceivedDropped.WithLabelValues(strconv.FormatUint(from, 10), "oversized_frame").Inc()
			}
			return err
		}
	}
}

// recvFrame receives and decodes the next frame of a Raft stream.
func recvFrame(stream peerpb.Peer_RaftServer) (*inFrame, error) {
	f := &inFrame{Frame: &peerpb.Frame{}}
	if err := stream.RecvMsg(f); err != nil {
		return nil, err
	}
	if !f.decoded { // the peer used the standard protobuf codec
		unpack(f.Frame, f)
	}
	f.Frame = nil
	return f, nil
}

// Admin serves a peer's control call.
func (s *peerServer) Admin(ctx context.Context, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	from, err := s.t.accept(ctx, req.GetHandshake())
	if err != nil {
		return nil, err
	}
	resp, err := s.t.receiveAdmin(ctx, from, req)
	switch {
	case errors.Is(err, ErrExhausted):
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return resp, nil
}
