package transport_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/internal/certs"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// mintCerts writes what 'flotilla cert ca' and 'flotilla cert node --id N'
// write: ca.pem and node-N.pem with their keys.
func mintCerts(dir string, clusterID uint64, nodes int) error {
	ca, err := certs.NewCA(clusterID, 24*time.Hour)
	if err != nil {
		return err
	}
	if err := ca.Write(dir, "ca"); err != nil {
		return err
	}
	for id := 1; id <= nodes; id++ {
		p, err := ca.Node(uint64(id), time.Hour)
		if err != nil {
			return err
		}
		if err := p.Write(dir, "node-"+strconv.Itoa(id)); err != nil {
			return err
		}
	}
	return nil
}

// nopSM is a state machine that keeps nothing.
type nopSM struct{}

func (nopSM) Apply(cmds []multiraft.Command) ([][]byte, error) { return make([][]byte, len(cmds)), nil }
func (nopSM) Snapshot(io.Writer) error                         { return nil }
func (nopSM) Restore(io.Reader) error                          { return nil }

// ExampleNewGRPC: three hosts (here in one process; normally one per
// machine) over the gRPC transport with mutual TLS. Every node has a
// certificate from the cluster's CA that names it (flotilla cert node);
// a peer that cannot show one is refused before any Raft message is read.
func ExampleNewGRPC() {
	dir, err := os.MkdirTemp("", "flotilla-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	const clusterID = 1
	if err := mintCerts(dir, clusterID, 3); err != nil {
		panic(err)
	}

	// Listen first, so that every node knows every address.
	listeners := map[transport.NodeID]net.Listener{}
	peers := map[transport.NodeID]string{}
	for id := transport.NodeID(1); id <= 3; id++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		listeners[id], peers[id] = lis, lis.Addr().String()
	}
	var hosts []*multiraft.Host
	leaders := make(chan multiraft.NodeID, 3) // who serves the group, as the hosts announce it
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()
	for id := transport.NodeID(1); id <= 3; id++ {
		name := "node-" + strconv.FormatUint(id, 10)
		tlsCfg, err := transport.TLSFiles{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"),
			CA: filepath.Join(dir, "ca.pem")}.Load()
		if err != nil {
			panic(err)
		}
		t, err := transport.NewGRPC(transport.GRPCConfig{ClusterID: clusterID, NodeID: id,
			Listener: listeners[id], Peers: peers, TLS: tlsCfg})
		if err != nil {
			panic(err)
		}
		cfg := multiraft.DefaultConfig()
		cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = clusterID, multiraft.NodeID(id), "data", vfs.NewMem()
		cfg.Transport = t // the host starts it, and closes it with itself
		cfg.StateMachine = func(multiraft.GroupID) multiraft.StateMachine { return nopSM{} }
		cfg.TickInterval, cfg.MemTableSize = 10*time.Millisecond, 4<<20
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.Events.LeaderChanged = func(l multiraft.LeaderInfo) {
			if l.Local {
				select { // on a worker: never block
				case leaders <- l.Leader:
				default:
				}
			}
		}
		h, err := multiraft.NewHost(cfg)
		if err != nil {
			panic(err)
		}
		hosts = append(hosts, h)
		if err := h.CreateGroup(1, []multiraft.NodeID{1, 2, 3}); err != nil {
			panic(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case id := <-leaders:
		res, err := hosts[id-1].Propose(ctx, 1, []byte("hello"))
		fmt.Println("committed over mTLS:", err == nil && res.Index > 0)
	case <-ctx.Done():
		panic(ctx.Err())
	}
	// Output: committed over mTLS: true
}
