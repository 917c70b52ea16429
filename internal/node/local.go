package node

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
)

// LocalCluster starts n nodes (IDs 1..n) of one cluster in this process on
// free 127.0.0.1 ports (one for peers and one for clients each), each with
// its own directory under dir; configure, if set, adjusts each node's
// config. The demo and the tests use it.
func LocalCluster(n int, dir string, configure func(*Config)) ([]*Node, error) {
	listeners := make([]net.Listener, 2*n) // peers', then clients'
	peers, clients := map[uint64]string{}, map[uint64]string{}
	for i := range listeners {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range listeners[:i] {
				_ = l.Close()
			}
			return nil, fmt.Errorf("node: listen: %w", err)
		}
		listeners[i] = l
		if i < n {
			peers[uint64(i+1)] = l.Addr().String()
		} else {
			clients[uint64(i-n+1)] = l.Addr().String()
		}
	}
	var nodes []*Node
	for i, l := range listeners[:n] {
		cfg := Config{ClusterID: 1, NodeID: uint64(i + 1), Listener: l, ClientListener: listeners[n+i], Peers: peers,
			ClientAddrs: clients, DataDir: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)), MetricsAddr: "127.0.0.1:0"}
		if configure != nil {
			configure(&cfg)
		}
		nd, err := Start(cfg)
		if err != nil {
			for _, l := range listeners[i+1 : n] {
				_ = l.Close()
			}
			for _, l := range listeners[n+i:] {
				_ = l.Close()
			}
			for _, started := range nodes {
				err = errors.Join(err, started.Close())
			}
			return nil, err
		}
		nodes = append(nodes, nd)
	}
	return nodes, nil
}
