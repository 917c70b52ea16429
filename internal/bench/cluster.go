package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/internal/node"
	"github.com/flotilla-io/flotilla/multiraft"
)

// cluster is three reference nodes in this process on real disk.
type cluster struct {
	dir   string
	cfgs  []node.Config
	tick  time.Duration
	elect int

	mu    sync.RWMutex
	nodes []*node.Node // nil while stopped; proposers read it as nodes stop
}

// running returns a copy of the node list (nil entries: stopped).
func (c *cluster) running() []*node.Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*node.Node(nil), c.nodes...)
}

func startCluster(dir string) (*cluster, error) {
	c := &cluster{dir: dir, tick: 100 * time.Millisecond, elect: 10}
	peers := map[uint64]string{}
	var listeners []net.Listener
	for i := 1; i <= 3; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		peers[uint64(i)] = l.Addr().String()
	}
	for i, l := range listeners {
		cfg := node.Config{ClusterID: 1, NodeID: uint64(i + 1), Listener: l, Peers: peers,
			DataDir: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)),
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			Host: func(hc *multiraft.Config) {
				// Bounded disk: one Pebble per host, small memtables (each
				// WAL is preallocated near its size).
				hc.MemTableSize = 16 << 20
				hc.TickInterval, hc.ElectionTicks = c.tick, c.elect
			}}
		c.cfgs = append(c.cfgs, cfg)
		n, err := node.Start(cfg)
		if err != nil {
			_ = c.close()
			return nil, err
		}
		c.mu.Lock()
		c.nodes = append(c.nodes, n)
		c.mu.Unlock()
	}
	return c, nil
}

// stop closes node i (0-based) as a crash would, bar the disk.
func (c *cluster) stop(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	return n.Close()
}

// restart starts node i again on its directory and address.
func (c *cluster) restart(i int) error {
	cfg := c.cfgs[i]
	l, err := net.Listen("tcp", cfg.Peers[cfg.NodeID])
	if err != nil {
		return err
	}
	cfg.Listener = l
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return nil
}

func (c *cluster) close() error {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = make([]*node.Node, len(nodes))
	c.mu.Unlock()
	var err error
	for _, n := range nodes {
		if n != nil {
			err = errors.Join(err, n.Close())
		}
	}
	return err
}

func (c *cluster) host(nodeID uint64) *multiraft.Host {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if nodeID == 0 || int(nodeID) > len(c.nodes) || c.nodes[nodeID-1] == nil {
		return nil
	}
	return c.nodes[nodeID-1].Host()
}

// createGroups creates groups 1..n on every node, in parallel.
func (c *cluster) createGroups(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	nodes := c.running()
	errs := make(chan error, len(nodes))
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := uint64(1); g <= uint64(n) && ctx.Err() == nil; g++ {
				if err := nd.Host().CreateGroup(g, []uint64{1, 2, 3}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// leaders returns each group's serving leader (0: none), and how many
// groups have one.
func (c *cluster) leaders(n int) ([]uint64, int) {
	out := make([]uint64, n+1)
	led := 0
	for _, nd := range c.running() {
		if nd == nil {
			continue
		}
		for g := 1; g <= n; g++ {
			if st, err := nd.Host().Status(uint64(g)); err == nil && st.Serving {
				out[g] = nd.Host().NodeID()
				led++
			}
		}
	}
	return out, led
}

// waitLed waits until n groups have serving leaders.
func (c *cluster) waitLed(ctx context.Context, n int) error {
	for {
		if _, led := c.leaders(n); led >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// spread moves leadership so that group g is led by node (g mod 3)+1.
func (c *cluster) spread(ctx context.Context, n int) error {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for pass := 0; pass < 5; pass++ {
		leaders, _ := c.leaders(n)
		moved := 0
		for g := 1; g <= n; g++ {
			want := uint64(g%3 + 1)
			if leaders[g] == want || c.host(leaders[g]) == nil {
				continue
			}
			moved++
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_ = c.host(leaders[g]).TransferLeadership(tctx, uint64(g), want)
			}()
		}
		wg.Wait()
		if moved == 0 {
			break
		}
	}
	return c.waitLed(ctx, n)
}
