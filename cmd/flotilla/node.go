package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/internal/node"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

func nodeCmd() *cobra.Command {
	var (
		clusterID, id                           uint64
		listen, peers, dataDir, metrics         string
		clientListen, clients, peersFile        string
		tlsCert, tlsKey, tlsCA, tlsCRL          string
		logLevel                                string
		drainTimeout, tick, retentionCheck      time.Duration
		stagingBytes                            int64
		listenFD, clientListenFD, electionTicks int
		memTableSize                            uint64
		insecure, pprofOn                       bool
		budget                                  node.Budget
		maxRequestBytes                         int
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run one node: peer gRPC, client gRPC, /metrics over HTTP",
		Long: `Runs one Flotilla node. Its partitions are replicated logs (see
'flotilla partition', 'flotilla produce', 'flotilla fetch').

The node serves its peers on --listen, its clients on --client-listen,
and Prometheus metrics at http://<metrics-listen>/metrics. It prints the
addresses it got (useful with port 0). SIGTERM or SIGINT drains it: it
hands the leadership of its partitions to other replicas, then stops.

Security: with --tls-cert, --tls-key and --tls-ca every peer and client
is authenticated by its certificate (see 'flotilla cert'), peers must be
in the peer set and clients need the role of each call. Without TLS
nothing is authenticated: the node refuses to listen on anything but
loopback unless --insecure says so. SIGHUP reloads the TLS files (a
rotated certificate, a new --tls-crl) and --peers-file (a decommissioned
node is refused from then on).

Example (three nodes on one machine):
  flotilla node --cluster-id 1 --id 1 --listen 127.0.0.1:7001 --client-listen 127.0.0.1:7101 \
    --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
    --clients 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 \
    --data-dir /tmp/flotilla-1 --metrics-listen 127.0.0.1:9001`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if peers != "" && peersFile != "" {
				return fmt.Errorf("--peers and --peers-file: give one")
			}
			readPeers := func() (map[uint64]string, error) {
				if peersFile == "" {
					return parsePeers("--peers", peers)
				}
				b, err := os.ReadFile(peersFile)
				if err != nil {
					return nil, fmt.Errorf("--peers-file: %w", err)
				}
				return parsePeers("--peers-file", strings.Join(strings.Fields(string(b)), ","))
			}
			peerMap, err := readPeers()
			if err != nil {
				return err
			}
			clientMap, err := parsePeers("--clients", clients)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			budget.MaxRequestBytes = maxRequestBytes
			cfg := node.Config{ClusterID: clusterID, NodeID: id, ListenAddr: listen, ClientListenAddr: clientListen,
				Peers: peerMap, ClientAddrs: clientMap, DataDir: dataDir, Insecure: insecure, Budget: budget,
				MetricsAddr: metrics, Pprof: pprofOn, RetentionCheckInterval: retentionCheck, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
				Host: func(hc *multiraft.Config) {
					hc.TickInterval, hc.ElectionTicks, hc.MemTableSize = tick, electionTicks, memTableSize
					hc.SnapshotStagingBytes = stagingBytes
				}}
			tlsFiles := transport.TLSFiles{Cert: tlsCert, Key: tlsKey, CA: tlsCA, CRL: tlsCRL}
			if cfg.TLS, err = loadTLSFiles(tlsFiles); err != nil {
				return err
			}
			for _, fd := range []struct {
				flag string
				fd   int
				lis  *net.Listener
			}{{"--listen-fd", listenFD, &cfg.Listener}, {"--client-listen-fd", clientListenFD, &cfg.ClientListener}} {
				if fd.fd > 0 {
					f := os.NewFile(uintptr(fd.fd), "listener")
					if *fd.lis, err = net.FileListener(f); err != nil {
						return fmt.Errorf("%s %d: %w", fd.flag, fd.fd, err)
					}
					_ = f.Close() // FileListener made its own copy
				}
			}
			n, err := node.Start(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %d listening on %s\n", id, n.Addr())
			fmt.Fprintf(cmd.OutOrStdout(), "node %d serving clients on %s\n", id, n.ClientAddr())
			if m := n.MetricsAddr(); m != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "node %d metrics on http://%s/metrics\n", id, m)
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			stopReload := make(chan struct{})
			defer close(stopReload)
			go func() {
				for {
					select {
					case <-stopReload:
						return
					case <-hup:
						if err := reload(n, readPeers, tlsFiles, cfg.TLS != nil); err != nil {
							fmt.Fprintf(cmd.ErrOrStderr(), "node %d: reload refused, nothing changed: %v\n", id, err)
						} else {
							fmt.Fprintf(cmd.OutOrStdout(), "node %d: reloaded the peer set and the TLS files\n", id)
						}
					}
				}
			}()
			return serveNode(n, id, sig, drainTimeout, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&clusterID, "cluster-id", 0, "cluster ID, the same on every node (required, non-zero)")
	f.Uint64Var(&id, "id", 0, "this node's ID, unique in the cluster (required, non-zero)")
	f.StringVar(&listen, "listen", "127.0.0.1:7001", "address for peers (port 0: any free port)")
	f.StringVar(&clientListen, "client-listen", "127.0.0.1:7101", "address for clients (port 0: any free port)")
	f.StringVar(&peers, "peers", "", "every node of the cluster as ID=ADDR,ID=ADDR,... (peer addresses; this one may be included)")
	f.StringVar(&peersFile, "peers-file", "", "a file of ID=ADDR entries (whitespace or comma separated) instead of --peers; SIGHUP reads it again")
	f.StringVar(&clients, "clients", "", "every node's client address as ID=ADDR,...: where a call that needs the leader is sent")
	f.BoolVar(&insecure, "insecure", false, "allow plaintext (no TLS) on an address other than loopback: nothing is authenticated")
	f.StringVar(&dataDir, "data-dir", "", "directory of this node's data (required)")
	f.StringVar(&metrics, "metrics-listen", "127.0.0.1:9001", "HTTP address of /metrics (empty: none)")
	f.BoolVar(&pprofOn, "pprof", false, "also serve Go's profiles at /debug/pprof/ on --metrics-listen (keep that address private)")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate naming flotilla://<cluster-id>/node/<id> (mutual TLS with --tls-key and --tls-ca)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&tlsCA, "tls-ca", "", "PEM certificate of the cluster's CA")
	f.StringVar(&tlsCRL, "tls-crl", "", "certificate revocation list signed by the CA (optional; SIGHUP reads it again)")
	db := node.DefaultBudget()
	f.IntVar(&maxRequestBytes, "max-request-bytes", 0, "largest client request in bytes (0: the largest produce request the limits allow)")
	f.Int64Var(&budget.MaxInFlightBytes, "max-inflight-bytes", db.MaxInFlightBytes, "bytes of client calls in progress at once (requests and fetch responses)")
	f.IntVar(&budget.MaxConnections, "max-client-connections", db.MaxConnections, "client connections open at once")
	f.Uint32Var(&budget.MaxStreamsPerConnection, "max-streams-per-connection", db.MaxStreamsPerConnection, "client calls in progress on one connection")
	f.DurationVar(&budget.HandshakeTimeout, "handshake-timeout", db.HandshakeTimeout, "how long a client connection's TLS and HTTP/2 handshake may take")
	f.DurationVar(&budget.IdleTimeout, "idle-timeout", db.IdleTimeout, "client connections idle this long are closed")
	f.Int64Var(&budget.ProduceBytesPerSecond, "quota-produce-bytes", 0, "each client's produce quota in record bytes per second (0: none)")
	f.Int64Var(&budget.FetchBytesPerSecond, "quota-fetch-bytes", 0, "each client's fetch quota in record bytes per second (0: none)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&drainTimeout, "drain-timeout", 10*time.Second, "how long SIGTERM waits for leadership to move away")
	f.DurationVar(&retentionCheck, "retention-check-interval", 30*time.Second, "how often the partitions this node leads are checked for records their retention lets go (negative: never)")
	d := multiraft.DefaultConfig()
	f.DurationVar(&tick, "tick", d.TickInterval, "Raft tick interval (the same on every node)")
	f.IntVar(&electionTicks, "election-ticks", d.ElectionTicks, "ticks without a leader before an election (the same on every node)")
	f.Int64Var(&stagingBytes, "snapshot-staging-bytes", d.SnapshotStagingBytes, "disk space for snapshots being received; a larger snapshot is refused before it is sent")
	f.Uint64Var(&memTableSize, "memtable-size", d.MemTableSize, "Pebble memtable size in bytes (each WAL is preallocated near it: it bounds disk use too)")
	f.IntVar(&listenFD, "listen-fd", 0, "serve peers on this inherited listening socket instead of --listen (systemd-style socket passing)")
	f.IntVar(&clientListenFD, "client-listen-fd", 0, "serve clients on this inherited listening socket instead of --client-listen")
	_ = cmd.MarkFlagRequired("cluster-id")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

// failedCloseTimeout bounds the wait for a failed node to close: its disk
// may never answer again, and a supervisor must see the process go.
const failedCloseTimeout = 5 * time.Second

// serveNode runs a started node until a signal, when it drains the node's
// leadership and stops it, or until its host fails (fail-stop), when it
// says why and returns the failure so the process exits non-zero for its
// supervisor to restart it.
func serveNode(n *node.Node, id uint64, sig <-chan os.Signal, drainTimeout time.Duration, out, errOut io.Writer) error {
	select {
	case s := <-sig:
		fmt.Fprintf(out, "node %d: %s, draining\n", id, s)
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := n.Drain(ctx); err != nil {
			fmt.Fprintf(errOut, "node %d: drain incomplete: %v\n", id, err)
		}
		return n.Close()
	case <-n.Failed():
		fmt.Fprintf(errOut, "node %d: host failed, exiting: %v\n", id, n.Err())
		closed := make(chan error, 1)
		go func() { closed <- n.Close() }()
		select {
		case <-closed:
		case <-time.After(failedCloseTimeout):
			fmt.Fprintf(errOut, "node %d: gave up closing after %s\n", id, failedCloseTimeout)
		}
		return fmt.Errorf("node %d: host failed: %w", id, n.Err())
	}
}

// reload reads the peer set and the TLS files again and hands them to the
// node; on any error nothing changes.
func reload(n *node.Node, readPeers func() (map[uint64]string, error), files transport.TLSFiles, withTLS bool) error {
	peers, err := readPeers()
	if err != nil {
		return err
	}
	if withTLS {
		c, err := files.Load()
		if err != nil {
			return err
		}
		if err := n.SetTLS(c); err != nil {
			return err
		}
	}
	n.SetPeers(peers)
	return nil
}

// parsePeers reads ID=ADDR,ID=ADDR,... (flag names the source in errors).
func parsePeers(flag, s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	if strings.TrimSpace(s) == "" {
		return peers, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		id, err := strconv.ParseUint(k, 10, 64)
		if !ok || err != nil || id == 0 || v == "" {
			return nil, fmt.Errorf("%s: %q is not ID=ADDR with a non-zero ID", flag, kv)
		}
		peers[id] = v
	}
	return peers, nil
}

// loadTLS reads the TLS files, all three or none.
func loadTLS(cert, key, ca string) (*transport.TLSConfig, error) {
	return loadTLSFiles(transport.TLSFiles{Cert: cert, Key: key, CA: ca})
}

// loadTLSFiles reads the TLS files: certificate, key and CA, all three or
// none, and the revocation list if named.
func loadTLSFiles(f transport.TLSFiles) (*transport.TLSConfig, error) {
	switch {
	case f.Cert == "" && f.Key == "" && f.CA == "":
		if f.CRL != "" {
			return nil, fmt.Errorf("--tls-crl needs --tls-cert, --tls-key and --tls-ca")
		}
		return nil, nil
	case f.Cert == "" || f.Key == "" || f.CA == "":
		return nil, fmt.Errorf("mutual TLS needs --tls-cert, --tls-key and --tls-ca together")
	}
	return f.Load()
}
