package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/clientpb"
	"github.com/flotilla-io/flotilla/transport"
)

// The client server.
//
// Clients have a gRPC server of their own, on their own address, apart
// from the peers': its limits are a client's (a request of MaxRequestBytes
// where a peer's frame may be 64 MiB; connection, stream and idle limits
// that a flood of clients cannot turn against the peers' links). A call
// passes, in order:
//
//  1. the connection limit, the TLS handshake (bounded in time) and the
//     per-connection stream limit;
//  2. the tap, before the request is read: authorization (auth.go), then
//     MaxRequestBytes from the in-flight budget (budget.go);
//  3. decoding, bounded: a produce request's records are counted as they
//     are read, and decoding stops one past MaxProduceRecords, so a
//     request of millions of empty records costs no more than its bytes;
//  4. the interceptor: the charge shrinks to what the request decoded to
//     and grows by the response a fetch may build; the client's quota;
//  5. the handler. The charge goes back when the RPC ends: its handler
//     returned and its response was handed to gRPC's write queue (a
//     client that cancels does not end a handler that still holds what it
//     was charged for). A response a client does not read stays in that
//     queue uncharged: what stays is bounded per connection by
//     MaxStreamsPerConnection responses, not by the budget.

// clientServer serves the client API.
type clientServer struct {
	n      *Node
	srv    *grpc.Server
	lis    net.Listener
	auth   *authorizer
	budget *inFlight
	quotas *quotas
	m      *clientMetrics
	done   chan struct{}
}

// clientMetrics are the client server's figures.
type clientMetrics struct {
	denied     *prometheus.CounterVec // method, role
	exhausted  *prometheus.CounterVec // reason
	inFlight   prometheus.Gauge
	connsOpen  prometheus.Gauge
	connsLimit prometheus.Counter
}

func newClientMetrics(reg prometheus.Registerer) *clientMetrics {
	const ns, sub = "flotilla", "client"
	m := &clientMetrics{
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "denied_total",
			Help: "Client calls refused PERMISSION_DENIED, by method and the role they needed."}, []string{"method", "role"}),
		exhausted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "exhausted_total",
			Help: "Client calls refused RESOURCE_EXHAUSTED by the node's budgets, by reason: busy (bytes in flight), quota, " +
				"request_too_large (over MaxRequestBytes, refused unread)."}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inflight_bytes",
			Help: "Bytes charged to the client calls in progress (bounded by the in-flight budget)."}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections_open",
			Help: "Client connections open (bounded by the connection limit)."}),
		connsLimit: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connections_refused_total",
			Help: "Client connections closed on arrival because the connection limit was reached."}),
	}
	reg.MustRegister(m.denied, m.exhausted, m.inFlight, m.connsOpen, m.connsLimit)
	return m
}

// startClientServer listens and serves the client API.
func (n *Node) startClientServer() error {
	cfg := n.cfg
	lis := cfg.ClientListener
	if lis == nil {
		addr := cfg.ClientListenAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		var err error
		if lis, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("node: client listener: %w", err)
		}
	}
	b := cfg.Budget
	m := newClientMetrics(n.reg)
	limited := transport.LimitListener(lis, b.MaxConnections, m.connsOpen, m.connsLimit)
	s := &clientServer{n: n, m: m, done: make(chan struct{}),
		lis:    limited,
		budget: &inFlight{max: b.MaxInFlightBytes, gauge: m.inFlight},
		quotas: &quotas{produce: rate.Limit(b.ProduceBytesPerSecond), fetch: rate.Limit(b.FetchBytesPerSecond)},
		auth:   &authorizer{clusterID: cfg.ClusterID, tls: n.trans.TLS, denied: m.denied, log: n.log.Warn, sometimes: rate.Sometimes{Interval: time.Second}},
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(b.MaxRequestBytes),
		grpc.MaxConcurrentStreams(b.MaxStreamsPerConnection),
		grpc.ConnectionTimeout(b.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: b.IdleTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.InTapHandle(s.tap),
		grpc.UnaryInterceptor(s.intercept),
		grpc.StatsHandler(s),
		grpc.ForceServerCodecV2(boundedCodec{maxRecords: cfg.Limits.MaxProduceRecords}),
		grpc.WaitForHandlers(true),
	}
	if cfg.TLS != nil {
		limited.EvictUnauthenticated()
		opts = append(opts, grpc.Creds(transport.CountingCreds{TransportCredentials: transport.ServerCredentials(n.trans.TLS),
			Fail: func(err error) {
				m.denied.WithLabelValues("handshake", "").Inc()
				s.auth.sometimes.Do(func() { n.log.Warn("refused a client connection at the TLS handshake", "err", err) })
			}, Authenticated: func(conn net.Conn, leaf *x509.Certificate) {
				// Only a client's connection (a certificate naming a
				// client or a role) is kept from eviction.
				if id := identityOf(leaf, cfg.ClusterID); id.name != "" || len(id.roles) > 0 {
					limited.Authenticated(conn)
				}
			}}))
	}
	s.srv = grpc.NewServer(opts...)
	clientpb.RegisterPartitionsServer(s.srv, &service{n: n})
	n.client = s
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(s.lis)
	}()
	return nil
}

// stop stops serving clients: calls in progress are cut off.
func (s *clientServer) stop() {
	s.srv.Stop()
	<-s.done
}

// tap admits a call before its request is read: the caller must have the
// role, and the in-flight budget room for the largest request.
func (s *clientServer) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	id, err := s.auth.authorize(ctx, info.FullMethodName)
	if err != nil {
		return nil, err
	}
	t := s.budget.take(int64(s.n.cfg.Budget.MaxRequestBytes))
	if t == nil {
		return nil, s.busy()
	}
	// Until the interceptor takes the call over, the stream's context
	// ending gives the charge back (a call refused before its handler).
	stop := context.AfterFunc(ctx, t.close)
	return context.WithValue(ctx, callKey{}, &call{id: id, ticket: t, stop: stop}), nil
}

// The charge of a call that reached its handler goes back at the RPC's
// end (stats.End), after the handler returned and its response was
// queued.
func (s *clientServer) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (s *clientServer) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	end, ok := rs.(*stats.End)
	if !ok {
		return
	}
	if c := callOf(ctx); c != nil {
		c.ticket.close()
	}
	// gRPC refuses a request over MaxRequestBytes unread, before any
	// handler or interceptor: counted here.
	if st := status.Convert(end.Error); st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max") {
		s.m.exhausted.WithLabelValues("request_too_large").Inc()
	}
}

func (s *clientServer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (s *clientServer) HandleConn(context.Context, stats.ConnStats) {}

// intercept charges a decoded call what it holds and may build, and
// checks its client's quota.
func (s *clientServer) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c := callOf(ctx)
	if c == nil {
		return handler(ctx, req)
	}
	if !c.stop() {
		return nil, status.FromContextError(ctx.Err()).Err() // ended before its handler: charge given back
	}
	msg, _ := req.(proto.Message)
	hold := int64(proto.Size(msg))
	switch r := req.(type) {
	case *clientpb.ProduceRequest:
		hold += int64(24 * len(r.GetRecords())) // the slice of records
		if wait := s.quotas.over(c.id.name, quotaProduce); wait > 0 {
			return nil, s.overQuota("produce", c.id.name, wait)
		}
	case *clientpb.FetchRequest:
		if wait := s.quotas.over(c.id.name, quotaFetch); wait > 0 {
			return nil, s.overQuota("fetch", c.id.name, wait)
		}
		_, maxBytes := s.n.cfg.Limits.fetchBounds(r)
		hold += int64(maxBytes)
	}
	if !c.ticket.resize(hold) {
		return nil, s.busy()
	}
	resp, err := handler(ctx, req)
	if err != nil {
		return resp, err // what failed costs no quota
	}
	// Quotas are charged after the fact, as Kafka's are: a call within
	// quota always goes through, and its client waits out any debt.
	var dir int
	var recs [][]byte
	switch r := req.(type) {
	case *clientpb.FetchRequest:
		dir, recs = quotaFetch, resp.(*clientpb.FetchResponse).GetRecords()
	case *clientpb.ProduceRequest:
		dir, recs = quotaProduce, r.GetRecords()
	default:
		return resp, nil
	}
	bytes := 0
	for _, rec := range recs {
		bytes += len(rec)
	}
	s.quotas.spend(c.id.name, dir, bytes)
	return resp, nil
}

// busy is the refusal of a call the in-flight budget has no room for.
func (s *clientServer) busy() error {
	s.m.exhausted.WithLabelValues("busy").Inc()
	return exhausted("busy", 100*time.Millisecond, "node %d: %d bytes of client calls in flight, the most it takes",
		s.n.cfg.NodeID, s.budget.max)
}

func (s *clientServer) overQuota(what, client string, wait time.Duration) error {
	s.m.exhausted.WithLabelValues("quota").Inc()
	return exhausted("quota", wait, "client %q is over its %s quota for %s", client, what, wait.Round(time.Millisecond))
}

// boundedCodec is the client server's codec: protobuf, except that a
// produce request's decoding stops one record past the limit (the handler
// refuses it by its count), so its cost is bounded by its bytes.
type boundedCodec struct{ maxRecords int }

func (boundedCodec) Name() string { return "proto" }

func (boundedCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (c boundedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*clientpb.ProduceRequest)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	return unmarshalProduce(data.Materialize(), req, c.maxRecords+1)
}

// unmarshalProduce decodes a ProduceRequest keeping at most maxRecords
// records (which alias b).
func unmarshalProduce(b []byte, req *clientpb.ProduceRequest, maxRecords int) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			rec, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if len(req.Records) < maxRecords {
				req.Records = append(req.Records, rec)
			}
			b = b[n:]
			continue
		case (num == 1 || num == 3 || num == 4) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			switch num {
			case 1:
				req.PartitionId = v
			case 3:
				req.ProducerId = v
			case 4:
				req.Sequence = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b) // an unknown field: skipped
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}
