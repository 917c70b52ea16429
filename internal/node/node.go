package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/transport"
)

// Config configures a node.
type Config struct {
	ClusterID, NodeID uint64
	// ListenAddr is the peers' gRPC address; ":0" picks a port, which
	// Addr reports. Listener, if set, is used instead.
	ListenAddr string
	Listener   net.Listener
	// ClientListenAddr is the client API's gRPC address (default
	// 127.0.0.1:0; ClientAddr reports it). ClientListener, if set, is
	// used instead.
	ClientListenAddr string
	ClientListener   net.Listener
	// Peers maps every node (this one may be included) to its peer
	// address; SetPeers changes it.
	Peers map[uint64]string
	// ClientAddrs maps nodes to their client API addresses: a call that
	// reached a node that does not lead the partition is pointed there.
	ClientAddrs map[uint64]string
	// DataDir holds the node's Pebble store.
	DataDir string
	// MetricsAddr serves /metrics over HTTP; empty: not served.
	MetricsAddr string
	// Pprof also serves Go's profiles (net/http/pprof's /debug/pprof/)
	// on MetricsAddr. They show the process's internals: keep that
	// address private.
	Pprof bool
	// TLS secures peer and client traffic, and names clients and their
	// roles (auth.go); SetTLS replaces it. Nil: plaintext, nothing
	// authenticated, which a non-loopback address allows only with
	// Insecure.
	TLS *transport.TLSConfig
	// Insecure allows plaintext on addresses other than loopback.
	Insecure bool
	// Host adjusts the host's config (tests, the demo).
	Host func(*multiraft.Config)
	// Partition bounds each partition's producer state.
	Partition partition.Config
	// Limits are the client API's size limits; zero fields take
	// DefaultLimits. The host's MaxProposalBytes is derived from them.
	Limits Limits
	// Budget bounds what clients may spend (budget.go); zero fields take
	// DefaultBudget.
	Budget Budget
	// RetentionCheckInterval is how often the node sweeps the partitions
	// it leads for records their retention lets go (retention.go).
	// Default 30 s; negative: never (SweepRetention still runs one).
	RetentionCheckInterval time.Duration
	Logger                 *slog.Logger
}

// Node is a running reference node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	trans   *transport.GRPC
	client  *clientServer
	host    *multiraft.Host
	metrics *http.Server
	mlis    net.Listener
	m       *nodeMetrics
	rm      *retentionMetrics
	wg      sync.WaitGroup
	// ctx ends at Close: background loops end with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu struct {
		sync.Mutex
		logs  map[uint64]*partition.Log
		peers map[uint64]string // the peer set, this node included
	}
	// failed is closed once the host fails (fail-stop); failure says why.
	failed  chan struct{}
	failure error
}

// Start opens the store, starts the host, and serves peers, clients and
// metrics.
func Start(cfg Config) (*Node, error) {
	if cfg.NodeID == 0 || cfg.ClusterID == 0 {
		return nil, errors.New("node: cluster ID and node ID must be set (and non-zero)")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("node: a data directory is required")
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Budget.validate(&cfg.Limits); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RetentionCheckInterval == 0 {
		cfg.RetentionCheckInterval = 30 * time.Second
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), reg: prometheus.NewRegistry(), failed: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.mu.logs = make(map[uint64]*partition.Log)
	n.mu.peers = maps.Clone(cfg.Peers)
	if n.mu.peers == nil {
		n.mu.peers = make(map[uint64]string)
	}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.m = newNodeMetrics(n.reg)
	n.rm = newRetentionMetrics(n.reg)

	tc := transport.GRPCConfig{
		Config:     transport.Config{Logger: n.log},
		ClusterID:  cfg.ClusterID,
		NodeID:     cfg.NodeID,
		Listener:   cfg.Listener,
		ListenAddr: cfg.ListenAddr,
		Peers:      cfg.Peers,
		TLS:        cfg.TLS,
	}
	trans, err := transport.NewGRPC(tc)
	if err != nil {
		return nil, err
	}
	n.trans = trans
	n.mu.peers[cfg.NodeID] = trans.Addr()
	if err := n.checkPlaintext(cfg.ClientListener, cfg.ClientListenAddr); err != nil {
		_ = trans.Close()
		return nil, err
	}

	hc := multiraft.DefaultConfig()
	hc.ClusterID, hc.NodeID = cfg.ClusterID, multiraft.NodeID(cfg.NodeID)
	hc.Dir = filepath.Join(cfg.DataDir, "store")
	hc.Transport = trans
	hc.Registerer = n.reg
	hc.Logger = n.log
	hc.DiskStateMachine = func(groupID multiraft.GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
		l := partition.New(cfg.Partition, r)
		n.mu.Lock()
		n.mu.logs[uint64(groupID)] = l
		n.mu.Unlock()
		return l
	}
	// A removed partition's log goes with it: the map holds only hosted
	// partitions, and a fetch of a deleted one is NotFound.
	hc.Events.GroupRemoved = func(groupID multiraft.GroupID) {
		n.mu.Lock()
		delete(n.mu.logs, uint64(groupID))
		n.mu.Unlock()
	}
	// Every produce request within the limits fits one proposal.
	hc.MaxProposalBytes = cfg.Limits.proposalBytes()
	if cfg.Host != nil {
		cfg.Host(&hc)
	}
	// The node learns of its host's failure whatever the hook set.
	hostFailed := hc.Events.HostFailed
	hc.Events.HostFailed = func(err error) {
		if hostFailed != nil {
			hostFailed(err)
		}
		n.failure = err
		close(n.failed)
	}
	if err := cfg.Limits.checkHost(&hc); err != nil {
		_ = trans.Close()
		return nil, err
	}
	host, err := multiraft.NewHost(hc)
	if err != nil {
		_ = trans.Close()
		return nil, err
	}
	n.host = host
	if err := n.startClientServer(); err != nil {
		_ = host.Close()
		return nil, err
	}

	if cfg.Pprof && (cfg.MetricsAddr == "" || !loopback(cfg.MetricsAddr) && !cfg.Insecure) {
		n.client.stop()
		_ = host.Close()
		return nil, fmt.Errorf("node: profiles (Pprof, --pprof) need a metrics address on loopback (or Insecure, --insecure): they show the process's internals and cost CPU to take; metrics address %q", cfg.MetricsAddr)
	}
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			n.client.stop()
			_ = host.Close()
			return nil, fmt.Errorf("node: metrics listener: %w", err)
		}
		n.mlis = mlis
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		n.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = n.metrics.Serve(mlis)
		}()
	}
	if cfg.RetentionCheckInterval > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.runRetention(n.ctx, cfg.RetentionCheckInterval)
		}()
	}
	if cfg.TLS == nil {
		n.log.Warn("running without authentication: any process that reaches the peer or client address can act as a peer "+
			"or a client with every role (start with TLS to authenticate)", "addr", n.Addr(), "client_addr", n.ClientAddr())
	}
	n.log.Info("node started", "addr", n.Addr(), "client_addr", n.ClientAddr(), "metrics", n.MetricsAddr())
	return n, nil
}

// Failed is closed once the node's host has failed (a failed write or
// sync, a stalled disk): the node serves nothing any more and its process
// should exit, non-zero, for a supervisor to restart it.
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Err returns why the node's host failed, nil if it has not.
func (n *Node) Err() error {
	select {
	case <-n.failed:
		return n.failure
	default:
		return nil
	}
}

// Addr is the node's peer gRPC address.
func (n *Node) Addr() string { return n.trans.Addr() }

// ClientAddr is the node's client API address.
func (n *Node) ClientAddr() string { return n.client.lis.Addr().String() }

// MetricsAddr is the address /metrics is served on, "" if none.
func (n *Node) MetricsAddr() string {
	if n.mlis == nil {
		return ""
	}
	return n.mlis.Addr().String()
}

// Host is the node's multiraft host.
func (n *Node) Host() *multiraft.Host { return n.host }

// Registry is the node's metric registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Metric returns the sum of a metric's series on this node (for a
// histogram, nothing: use the registry).
func (n *Node) Metric(name string) float64 {
	families, err := n.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// partitionLog returns the log of a partition hosted here.
func (n *Node) partitionLog(id uint64) *partition.Log {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.logs[id]
}

// clientAddr returns a node's client API address, "" if unknown.
func (n *Node) clientAddr(id uint64) string {
	if id == n.cfg.NodeID {
		return n.ClientAddr()
	}
	return n.cfg.ClientAddrs[id]
}

// isNode reports whether a node is in the cluster (this node's peer set).
func (n *Node) isNode(id uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.mu.peers[id]
	return ok
}

// nodes returns every node of the cluster, in order.
func (n *Node) nodes() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := slices.Collect(maps.Keys(n.mu.peers))
	slices.Sort(ids)
	return ids
}

// SetPeers replaces the peer set (every node of the cluster and its peer
// address; this node's own entry is ignored): a node left out is refused
// from now on, its open streams cut before their next frame. Run it on
// every node to decommission one.
func (n *Node) SetPeers(peers map[uint64]string) {
	n.mu.Lock()
	n.mu.peers = maps.Clone(peers)
	if n.mu.peers == nil {
		n.mu.peers = make(map[uint64]string)
	}
	n.mu.peers[n.cfg.NodeID] = n.Addr()
	n.mu.Unlock()
	n.trans.SetPeers(peers)
	n.log.Info("peer set changed", "peers", len(peers))
}

// SetTLS replaces the node's certificate, the CA and the revocation list,
// for peers and clients alike: new connections use them, and open ones
// are checked against them at their next frame or call. A node started
// without TLS cannot switch to it.
func (n *Node) SetTLS(c *transport.TLSConfig) error {
	if c == nil || len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("node: SetTLS: no certificate")
	}
	leaf, err := x509.ParseCertificate(c.Certificate.Certificate[0])
	if err != nil {
		return fmt.Errorf("node: SetTLS: %w", err)
	}
	want := transport.NodeURI(n.cfg.ClusterID, n.cfg.NodeID)
	if !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == want }) {
		return fmt.Errorf("node: SetTLS: the certificate does not name this node (%s): its peers would refuse it", want)
	}
	if err := n.trans.SetTLS(c); err != nil {
		return err
	}
	n.log.Info("TLS configuration changed", "revoked", len(c.Revoked))
	return nil
}

// checkPlaintext refuses plaintext on an address other than loopback,
// unless the config allows it.
func (n *Node) checkPlaintext(clientLis net.Listener, clientAddr string) error {
	if n.cfg.TLS != nil || n.cfg.Insecure {
		return nil
	}
	addrs := []string{n.Addr()}
	if clientLis != nil {
		addrs = append(addrs, clientLis.Addr().String())
	} else if clientAddr != "" {
		addrs = append(addrs, clientAddr)
	}
	for _, a := range addrs {
		if !loopback(a) {
			return fmt.Errorf("node: %s is not a loopback address and no TLS is configured: anyone who reaches it could act "+
				"as a peer or a client; configure TLS, or allow plaintext explicitly (Insecure, --insecure)", a)
		}
	}
	return nil
}

// loopback reports whether a listen address is on a loopback interface
// only ("" or an unspecified host listens on every interface).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Drain hands the leadership of every partition this node leads to
// another replica, so that stopping it costs clients no election timeout.
// It returns when no partition is led here or ctx ends.
func (n *Node) Drain(ctx context.Context) error {
	for ctx.Err() == nil {
		led := 0
		var wg sync.WaitGroup
		for _, id := range n.host.Groups() {
			st, err := n.host.Status(id)
			if err != nil || st.Role != multiraft.RoleLeader {
				continue
			}
			to := transferTarget(st, multiraft.NodeID(n.cfg.NodeID))
			if to == 0 {
				continue // no other live replica: nowhere to go
			}
			led++
			wg.Add(1)
			go func() {
				defer wg.Done()
				tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_ = n.host.TransferLeadership(tctx, id, to)
			}()
		}
		wg.Wait()
		if led == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return ctx.Err()
}

// transferTarget picks the live follower with the longest log, 0 if none.
func transferTarget(st multiraft.Status, self multiraft.NodeID) multiraft.NodeID {
	var to multiraft.NodeID
	var best uint64
	for replica, p := range st.Progress {
		node := st.Replicas[replica]
		if node == self || node == 0 || !p.Active {
			continue
		}
		if to == 0 || p.Match > best || (p.Match == best && node < to) {
			to, best = node, p.Match
		}
	}
	return to
}

// Close stops serving and closes the host (and with it the transport and
// the store).
func (n *Node) Close() error {
	n.cancel()
	n.client.stop()
	if n.metrics != nil {
		_ = n.metrics.Close()
	}
	n.wg.Wait()
	return n.host.Close()
}
