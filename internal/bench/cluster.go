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
	"github.com/flotilla-io/flotilla/partition"
)

// cluster is the three nodes (IDs 1 to 3) a workload runs on: in this
// process (localCluster, the default) or as three `flotilla node`
// processes (procCluster, --procs). Errors of propose are the host's:
// *multiraft.NotLeaderError with the leader's hint, or its sentinels.
type cluster interface {
	// createGroups creates groups 1..n replicated on every node.
	createGroups(ctx context.Context, n int) error
	// leaders returns each group's leader (0: none) and how many groups
	// have one.
	leaders(n int) ([]uint64, int)
	// knownLeader is the leader of a group as some running node knows it.
	knownLeader(g uint64) uint64
	propose(ctx context.Context, node, g uint64, p *payload) error
	transfer(ctx context.Context, g, from, to uint64) error
	up(node uint64) bool
	// stop stops node i (0-based) as a crash would, bar the disk; restart
	// starts it again on its directory and address.
	stop(i int) error
	restart(i int) error
	// metrics reads metrics of node i (each the sum of its series); ok is
	// false if the node is not running.
	metrics(i int, names []string) (values []float64, ok bool)
	// histogram reads a histogram of node i, its series summed; ok is
	// false if the node is not running.
	histogram(i int, name string) (h buckets, ok bool)
	// cpu is the CPU time the nodes used (with --procs, the node
	// processes only; in process, the whole process, proposers included).
	cpu() time.Duration
	// rss and peakRSS are the nodes' resident set size now and at its
	// peak since resetPeak.
	rss() int64
	peakRSS() int64
	resetPeak()
	electionTimeout() time.Duration
	close() error
}

// payload is one proposal's data: a record, and the partition log's
// produce command holding it (what a node makes of a client's record).
type payload struct{ record, command []byte }

func newPayload(size int) *payload {
	rec := make([]byte, size)
	return &payload{record: rec, command: (&partition.Produce{Records: [][]byte{rec}}).Marshal()}
}

// Every run uses these timings and memtable size (bounded disk: each WAL is
// preallocated near the memtable size).
const (
	benchTick         = 100 * time.Millisecond
	benchElectTicks   = 10
	benchMemTableSize = 16 << 20
)

// localCluster is three reference nodes in this process on real disk.
type localCluster struct {
	dir  string
	cfgs []node.Config

	mu    sync.RWMutex
	nodes []*node.Node // nil while stopped; proposers read it as nodes stop

	// served is when each group's leader last started to serve, stamped
	// by the hosts (see servedClock).
	served struct {
		sync.Mutex
		at map[uint64]time.Time
	}
}

var _ servedClock = (*localCluster)(nil)

func (c *localCluster) servedAt(g int) time.Time {
	c.served.Lock()
	defer c.served.Unlock()
	return c.served.at[uint64(g)]
}

// running returns a copy of the node list (nil entries: stopped).
func (c *localCluster) running() []*node.Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*node.Node(nil), c.nodes...)
}

// noopSM is a state machine that does nothing (--sm noop).
type noopSM struct{}

func (noopSM) Apply(_ multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	return make([][]byte, len(cmds)), nil
}

func startLocal(dir string, noop bool) (*localCluster, error) {
	c := &localCluster{dir: dir}
	c.served.at = make(map[uint64]time.Time)
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
				hc.MemTableSize = benchMemTableSize
				hc.TickInterval, hc.ElectionTicks = benchTick, benchElectTicks
				if noop {
					hc.DiskStateMachine = func(multiraft.GroupID, multiraft.Reader) multiraft.DiskStateMachine { return noopSM{} }
				}
				hc.Events.LeaderChanged = func(li multiraft.LeaderInfo) {
					if li.Local {
						c.served.Lock()
						c.served.at[uint64(li.GroupID)] = time.Now()
						c.served.Unlock()
					}
				}
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
func (c *localCluster) stop(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	return n.Close()
}

// restart starts node i again on its directory and address.
func (c *localCluster) restart(i int) error {
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

func (c *localCluster) close() error {
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

func (c *localCluster) host(nodeID uint64) *multiraft.Host {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if nodeID == 0 || int(nodeID) > len(c.nodes) || c.nodes[nodeID-1] == nil {
		return nil
	}
	return c.nodes[nodeID-1].Host()
}

// createPerNode is how many groups a node creates at once: each
// creation is a synced write, and concurrent ones share an fsync, as a
// broker creating many partitions would have them.
const createPerNode = 32

// createGroups creates groups 1..n on every node, in parallel.
func (c *localCluster) createGroups(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	nodes := c.running()
	errs := make(chan error, len(nodes)*createPerNode)
	for _, nd := range nodes {
		for w := range uint64(createPerNode) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for g := 1 + w; g <= uint64(n) && ctx.Err() == nil; g += createPerNode {
					if err := nd.Host().CreateGroup(multiraft.GroupID(g), []multiraft.NodeID{1, 2, 3}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
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
func (c *localCluster) leaders(n int) ([]uint64, int) {
	out := make([]uint64, n+1)
	led := 0
	for _, nd := range c.running() {
		if nd == nil {
			continue
		}
		for g := 1; g <= n; g++ {
			if st, err := nd.Host().Status(multiraft.GroupID(g)); err == nil && st.Serving {
				out[g] = uint64(nd.Host().NodeID())
				led++
			}
		}
	}
	return out, led
}

func (c *localCluster) knownLeader(g uint64) uint64 {
	for _, n := range c.running() {
		if n == nil {
			continue
		}
		if st, err := n.Host().Status(multiraft.GroupID(g)); err == nil && st.Leader != 0 {
			return uint64(st.Leader)
		}
	}
	return 0
}

func (c *localCluster) propose(ctx context.Context, node, g uint64, p *payload) error {
	h := c.host(node)
	if h == nil {
		return fmt.Errorf("%w: node %d is down", multiraft.ErrStopped, node)
	}
	_, err := h.Propose(ctx, multiraft.GroupID(g), p.command)
	return err
}

func (c *localCluster) transfer(ctx context.Context, g, from, to uint64) error {
	h := c.host(from)
	if h == nil {
		return fmt.Errorf("%w: node %d is down", multiraft.ErrStopped, from)
	}
	return h.TransferLeadership(ctx, multiraft.GroupID(g), multiraft.NodeID(to))
}

func (c *localCluster) up(node uint64) bool { return c.host(node) != nil }

func (c *localCluster) metrics(i int, names []string) ([]float64, bool) {
	n := c.running()[i]
	if n == nil {
		return nil, false
	}
	out := make([]float64, len(names))
	for j, name := range names {
		out[j] = n.Metric(name)
	}
	return out, true
}

func (c *localCluster) histogram(i int, name string) (buckets, bool) {
	n := c.running()[i]
	if n == nil {
		return buckets{}, false
	}
	families, err := n.Registry().Gather()
	if err != nil {
		return buckets{}, false
	}
	var h buckets
	for _, f := range families {
		if f.GetName() == name {
			h.add(f.GetMetric())
		}
	}
	return h, true
}

func (c *localCluster) cpu() time.Duration { return cpuTime() }
func (c *localCluster) rss() int64         { return currentRSS() }
func (c *localCluster) peakRSS() int64     { return peakRSS() }
func (c *localCluster) resetPeak()         { resetPeakRSS() }

func (c *localCluster) electionTimeout() time.Duration { return benchElectTicks * benchTick }

// waitLed waits until n groups have leaders.
func waitLed(ctx context.Context, c cluster, n int) error {
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
func spread(ctx context.Context, c cluster, n int) error {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for pass := 0; pass < 5; pass++ {
		leaders, _ := c.leaders(n)
		moved := 0
		for g := 1; g <= n; g++ {
			want := uint64(g%3 + 1)
			if leaders[g] == want || !c.up(leaders[g]) {
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
				_ = c.transfer(tctx, uint64(g), leaders[g], want)
			}()
		}
		wg.Wait()
		if moved == 0 {
			break
		}
	}
	return waitLed(ctx, c, n)
}
