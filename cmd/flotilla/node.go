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
		clusterID, id                    uint64
		listen, peers, dataDir, metrics  string
		tlsCert, tlsKey, tlsCA, logLevel string
		drainTimeout, tick               time.Duration
		listenFD, electionTicks          int
		memTableSize                     uint64
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run one node: peer and client gRPC on one port, /metrics over HTTP",
		Long: `Runs one Flotilla node. Its partitions are replicated logs (see
'flotilla partition', 'flotilla produce', 'flotilla fetch').

The node serves its peers and its clients on --listen, and Prometheus
metrics at http://<metrics-listen>/metrics. It prints the addresses it
got (useful with port 0). SIGTERM or SIGINT drains it: it hands the
leadership of its partitions to other replicas, then stops.

Example (three nodes on one machine):
  flotilla node --cluster-id 1 --id 1 --listen 127.0.0.1:7001 \
    --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
    --data-dir /tmp/flotilla-1 --metrics-listen 127.0.0.1:9001`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peerMap, err := parsePeers(peers)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg := node.Config{ClusterID: clusterID, NodeID: id, ListenAddr: listen, Peers: peerMap, DataDir: dataDir,
				MetricsAddr: metrics, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
				Host: func(hc *multiraft.Config) {
					hc.TickInterval, hc.ElectionTicks, hc.MemTableSize = tick, electionTicks, memTableSize
				}}
			if cfg.TLS, err = loadTLS(tlsCert, tlsKey, tlsCA); err != nil {
				return err
			}
			if listenFD > 0 {
				f := os.NewFile(uintptr(listenFD), "listener")
				if cfg.Listener, err = net.FileListener(f); err != nil {
					return fmt.Errorf("--listen-fd %d: %w", listenFD, err)
				}
				_ = f.Close() // FileListener made its own copy
			}
			n, err := node.Start(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %d listening on %s\n", id, n.Addr())
			if m := n.MetricsAddr(); m != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "node %d metrics on http://%s/metrics\n", id, m)
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			return serveNode(n, id, sig, drainTimeout, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&clusterID, "cluster-id", 0, "cluster ID, the same on every node (required, non-zero)")
	f.Uint64Var(&id, "id", 0, "this node's ID, unique in the cluster (required, non-zero)")
	f.StringVar(&listen, "listen", "127.0.0.1:7001", "address for peers and clients (port 0: any free port)")
	f.StringVar(&peers, "peers", "", "every node of the cluster as ID=ADDR,ID=ADDR,... (this one may be included)")
	f.StringVar(&dataDir, "data-dir", "", "directory of this node's data (required)")
	f.StringVar(&metrics, "metrics-listen", "127.0.0.1:9001", "HTTP address of /metrics (empty: none)")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate naming flotilla://<cluster-id>/node/<id> (mutual TLS with --tls-key and --tls-ca)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&tlsCA, "tls-ca", "", "PEM certificate of the cluster's CA")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&drainTimeout, "drain-timeout", 10*time.Second, "how long SIGTERM waits for leadership to move away")
	d := multiraft.DefaultConfig()
	f.DurationVar(&tick, "tick", d.TickInterval, "Raft tick interval (the same on every node)")
	f.IntVar(&electionTicks, "election-ticks", d.ElectionTicks, "ticks without a leader before an election (the same on every node)")
	f.Uint64Var(&memTableSize, "memtable-size", d.MemTableSize, "Pebble memtable size in bytes (each WAL is preallocated near it: it bounds disk use too)")
	f.IntVar(&listenFD, "listen-fd", 0, "serve on this inherited listening socket instead of --listen (systemd-style socket passing)")
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

// parsePeers reads ID=ADDR,ID=ADDR,...
func parsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	if strings.TrimSpace(s) == "" {
		return peers, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		id, err := strconv.ParseUint(k, 10, 64)
		if !ok || err != nil || id == 0 || v == "" {
			return nil, fmt.Errorf("--peers: %q is not ID=ADDR with a non-zero ID", kv)
		}
		peers[id] = v
	}
	return peers, nil
}

// loadTLS reads the TLS files, all three or none.
func loadTLS(cert, key, ca string) (*transport.TLSConfig, error) {
	switch {
	case cert == "" && key == "" && ca == "":
		return nil, nil
	case cert == "" || key == "" || ca == "":
		return nil, fmt.Errorf("mutual TLS needs --tls-cert, --tls-key and --tls-ca together")
	}
	return transport.LoadTLSConfig(cert, key, ca)
}
