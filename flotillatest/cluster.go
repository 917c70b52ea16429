package flotillatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/flotilla-io/flotilla/internal/await"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// Transport kinds of a cluster.
const (
	Memory = "memory"
	GRPC   = "grpc"
)

// The host's ID types, for brevity.
type (
	NodeID  = multiraft.NodeID
	GroupID = multiraft.GroupID
)

// Cluster is N hosts in one process on in-memory filesystems, wired by the
// in-memory network or by gRPC on 127.0.0.1, and driven by one manual
// clock, so tests control time instead of depending on wall-clock ticks on
// a loaded machine.
type Cluster struct {
	t         TB
	cfg       Config
	configure func(*multiraft.Config)
	kind      string
	// transportConfig adjusts each host's transport config.
	transportConfig func(*transport.Config)
	Clock           *multiraft.ManualClock
	// Net is the in-memory network; its filters act on either transport.
	Net *transport.Network
	// TickInterval is the hosts' tick; WaitFor, TickUntil and Step move
	// Clock by it.
	TickInterval time.Duration

	mu    sync.Mutex
	addrs map[multiraft.NodeID]string // gRPC listen addresses, kept across restarts
	lis   map[multiraft.NodeID]net.Listener
	regs  map[multiraft.NodeID]*prometheus.Registry
	dirs  map[multiraft.NodeID]string // real-disk data directories (Disk)
	hosts map[multiraft.NodeID]*multiraft.Host
	fs    map[multiraft.NodeID]*vfs.MemFS
	holds map[multiraft.NodeID]*syncHold
	sms   map[multiraft.NodeID]map[multiraft.GroupID]any // node -> group -> state machine
}

// syncHold blocks a node's WAL syncs while held: the node keeps running,
// but nothing it writes becomes durable.
type syncHold struct {
	mu      sync.Mutex
	held    bool
	fail    bool
	release chan struct{}
	noSpace string // files with this suffix cannot be created or written
}

func (s *syncHold) wait(op errorfs.Op) error {
	s.mu.Lock()
	noSpace := s.noSpace
	s.mu.Unlock()
	switch op.Kind {
	case errorfs.OpCreate, errorfs.OpFileWrite, errorfs.OpFileWriteAt:
		if noSpace != "" && strings.HasSuffix(op.Path, noSpace) {
			return syscall.ENOSPC
		}
	}
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
	default:
		return nil
	}
	if !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	s.mu.Lock()
	held, fail, ch := s.held, s.fail, s.release
	s.mu.Unlock()
	if fail {
		return errorfs.ErrInjected
	}
	if held {
		<-ch
	}
	return nil
}

// FailSyncs makes every later WAL sync of a node fail, as a dying disk
// would.
func (c *Cluster) FailSyncs(node multiraft.NodeID) {
	h := c.disk(node)
	h.mu.Lock()
	h.fail = true
	h.mu.Unlock()
}

// NoSpace makes a node's disk refuse, with ENOSPC, to create or write
// files whose name ends in suffix ("" again: it takes them again): ".sst"
// fails flushes and compactions, ".log" the WAL.
func (c *Cluster) NoSpace(node multiraft.NodeID, suffix string) {
	h := c.disk(node)
	h.mu.Lock()
	h.noSpace = suffix
	h.mu.Unlock()
}

// SetFreeSpace makes a node's disk report free bytes free (0: report
// nothing, as an in-memory disk does), for the space alarm.
func (c *Cluster) SetFreeSpace(node multiraft.NodeID, free uint64) {
	c.disk(node)
	c.mu.Lock()
	fs := c.fs[node]
	c.mu.Unlock()
	usage := vfs.DiskUsage{}
	if free > 0 {
		usage = vfs.DiskUsage{AvailBytes: free, TotalBytes: 100 << 30, UsedBytes: 100<<30 - free}
	}
	fs.TestingSetDiskUsage(usage)
}

// HoldSyncs stops a node's WAL syncs from completing until ReleaseSyncs.
func (c *Cluster) HoldSyncs(node multiraft.NodeID) {
	h := c.disk(node)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.held {
		h.held, h.release = true, make(chan struct{})
	}
}

// disk returns the fault injector of a node's in-memory disk; disk faults
// need one (a cluster on real disk has none).
func (c *Cluster) disk(node NodeID) *syncHold {
	c.t.Helper()
	h := c.holds[node]
	if c.cfg.Disk || h == nil {
		c.t.Fatalf("node %d: disk faults act on the kit's in-memory disks (Config.Disk is set, or there is no such node)", node)
	}
	return h
}

// ReleaseSyncs lets a node's held syncs complete.
func (c *Cluster) ReleaseSyncs(node multiraft.NodeID) {
	h := c.holds[node]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		h.held = false
		close(h.release)
	}
}

// Config shapes a cluster.
type Config struct {
	// Nodes is the number of hosts, node IDs 1..Nodes.
	Nodes int
	// Disk puts each host's data on real disk (a temporary directory)
	// instead of a crashable in-memory filesystem: for benchmarks.
	Disk bool
	// StateMachine makes node's in-memory state machine of a group: the
	// embedder's own. Nil: the kit's LogSM (see SM).
	StateMachine func(node NodeID, group GroupID) multiraft.StateMachine
	// DiskStateMachine, if set, makes on-disk state machines instead.
	DiskStateMachine func(node NodeID, group GroupID, r multiraft.Reader) multiraft.DiskStateMachine
	// OnDisk, with no factory set, gives the groups the kit's on-disk
	// DiskLogSM instead of its in-memory LogSM.
	OnDisk bool
	// Configure, if set, adjusts each host's config before it starts.
	Configure func(*multiraft.Config)
	// Transport is Memory (the default) or GRPC.
	Transport string
	// TransportConfig, if set, adjusts each host's transport config.
	TransportConfig func(*transport.Config)
}

// TB is what the kit needs of its caller: *testing.T, *testing.B and
// *testing.F have it. A program that runs a cluster outside a test (an
// example, a demo) supplies its own: Fatal and Fatalf must stop the
// calling goroutine (runtime.Goexit) or the program, and Cleanup's
// functions run when it is done.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Context() context.Context
}

// NewCluster starts a cluster of cfg.Nodes hosts (node IDs 1..N) and closes
// it when the test ends.
func NewCluster(t TB, cfg Config) *Cluster {
	c := &Cluster{
		t: t, Clock: multiraft.NewManualClock(time.Unix(1_700_000_000, 0)), Net: transport.NewNetwork(),
		TickInterval: 100 * time.Millisecond,
		hosts:        map[multiraft.NodeID]*multiraft.Host{}, fs: map[multiraft.NodeID]*vfs.MemFS{}, holds: map[multiraft.NodeID]*syncHold{}, regs: map[multiraft.NodeID]*prometheus.Registry{},
		dirs: map[multiraft.NodeID]string{},
		sms:  map[multiraft.NodeID]map[multiraft.GroupID]any{}, configure: cfg.Configure, cfg: cfg,
		kind: cfg.Transport, transportConfig: cfg.TransportConfig, addrs: map[multiraft.NodeID]string{}, lis: map[multiraft.NodeID]net.Listener{},
	}
	switch c.kind {
	case "":
		c.kind = Memory
	case Memory, GRPC:
	default:
		t.Fatalf("flotillatest: transport %q, want %q or %q", c.kind, Memory, GRPC)
	}
	t.Cleanup(c.Close) // closes what started, should a later start fail
	if c.kind == GRPC {
		// Every address is known before the first host starts.
		for id := multiraft.NodeID(1); id <= multiraft.NodeID(cfg.Nodes); id++ {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen: %v", err)
			}
			c.lis[id], c.addrs[id] = lis, lis.Addr().String()
		}
	}
	for id := multiraft.NodeID(1); id <= multiraft.NodeID(cfg.Nodes); id++ {
		if cfg.Disk {
			c.dirs[id] = t.TempDir()
		}
		c.fs[id] = vfs.NewCrashableMem()
		c.holds[id] = &syncHold{}
		c.start(id)
	}
	return c
}

func (c *Cluster) start(node multiraft.NodeID) {
	reg := prometheus.NewRegistry()
	c.mu.Lock()
	c.sms[node] = map[multiraft.GroupID]any{}
	c.regs[node] = reg
	c.mu.Unlock()
	hc := multiraft.DefaultConfig()
	hc.ClusterID = 1
	hc.NodeID = node
	hc.Dir = "data"
	hc.FS = errorfs.Wrap(c.fs[node], errorfs.InjectorFunc(c.holds[node].wait))
	if dir := c.dirs[node]; dir != "" {
		hc.Dir, hc.FS = dir, vfs.Default
	}
	hc.Registerer = reg
	hc.Transport = c.newTransport(node)
	hc.Clock = c.Clock
	hc.TickInterval = c.TickInterval
	hc.Workers = 2
	hc.MemTableSize = 4 << 20
	hc.EntryCacheBytes = 8 << 20
	hc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("FLOTILLA_TEST_LOG") != "" { // debug a failing test: FLOTILLA_TEST_LOG=1
		hc.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	keep := func(groupID GroupID, sm any) {
		c.mu.Lock()
		c.sms[node][groupID] = sm
		c.mu.Unlock()
	}
	switch {
	case c.cfg.DiskStateMachine != nil:
		hc.DiskStateMachine = func(groupID GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
			sm := c.cfg.DiskStateMachine(node, groupID, r)
			keep(groupID, sm)
			return sm
		}
	case c.cfg.StateMachine != nil:
		hc.StateMachine = func(groupID GroupID) multiraft.StateMachine {
			sm := c.cfg.StateMachine(node, groupID)
			keep(groupID, sm)
			return sm
		}
	case c.cfg.OnDisk:
		hc.DiskStateMachine = func(groupID GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
			sm := &DiskLogSM{r: r}
			keep(groupID, sm)
			return sm
		}
	default:
		hc.StateMachine = func(groupID GroupID) multiraft.StateMachine {
			sm := &LogSM{}
			keep(groupID, sm)
			return sm
		}
	}
	if c.configure != nil {
		kit := hc
		c.configure(&hc)
		if hc.Registerer != kit.Registerer || hc.Clock != kit.Clock || hc.TickInterval != kit.TickInterval || hc.Transport != kit.Transport {
			_ = kit.Transport.Close()
			c.t.Fatalf("flotillatest: Configure replaced the Registerer, Clock, TickInterval or Transport the kit drives node %d with", node)
		}
	}
	h, err := multiraft.NewHost(hc)
	if err != nil {
		c.t.Fatalf("start node %d: %v", node, err)
	}
	c.mu.Lock()
	c.hosts[node] = h
	c.mu.Unlock()
}

// newTransport builds a node's transport of the cluster's kind. Faults
// injected through Net's filters act on both.
func (c *Cluster) newTransport(node multiraft.NodeID) transport.Transport {
	tc := transport.Config{MaxBackoff: 20 * time.Millisecond, Filters: c.Net.Filters}
	if c.transportConfig != nil {
		c.transportConfig(&tc)
	}
	if c.kind != GRPC {
		return transport.NewMemory(c.Net, uint64(node), tc)
	}
	c.mu.Lock()
	lis := c.lis[node]
	delete(c.lis, node)
	c.mu.Unlock()
	if lis == nil { // a restart: the same address again
		var err error
		if lis, err = net.Listen("tcp", c.addrs[node]); err != nil {
			c.t.Fatalf("node %d: listen again on %s: %v", node, c.addrs[node], err)
		}
	}
	peers := make(map[transport.NodeID]string, len(c.addrs))
	for id, addr := range c.addrs {
		peers[uint64(id)] = addr
	}
	tr, err := transport.NewGRPC(transport.GRPCConfig{Config: tc, ClusterID: 1, NodeID: uint64(node), Listener: lis, Peers: peers})
	if err != nil {
		c.t.Fatalf("node %d: %v", node, err)
	}
	return tr
}

// Isolate cuts a node off the network (both ways) until heal is called.
func (c *Cluster) Isolate(node multiraft.NodeID) (heal func()) {
	return c.Net.AddFilter(transport.Isolate(uint64(node)))
}

// Crash stops a node as a power cut would: it is cut off the network
// first (so nothing it does after the cut reaches anyone), its disk is
// cloned keeping every synced byte and a random share of the unsynced ones
// (drawn from rng; nil: a fixed one), and the host is closed. Restart
// brings it back on that disk. In-memory disks only.
func (c *Cluster) Crash(node multiraft.NodeID, rng *rand.Rand) {
	c.t.Helper()
	c.disk(node)
	if rng == nil {
		rng = rand.New(rand.NewPCG(uint64(node), 0))
	}
	keep, seed := rng.IntN(101), rng.Uint64()
	heal := c.Isolate(node)
	defer heal()
	c.mu.Lock()
	h := c.hosts[node]
	if h == nil {
		c.mu.Unlock()
		c.t.Fatalf("crash node %d: it is down already", node)
	}
	clone := c.fs[node].CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: keep, RNG: rand.New(rand.NewPCG(seed, 1))})
	delete(c.hosts, node)
	c.fs[node] = clone
	c.mu.Unlock()
	c.ReleaseSyncs(node)
	_ = h.Close() // the old host's later writes go to the old disk, lost
}

// StagedSnapshots lists the files in a node's snapshot staging directory
// (store.StagingDir): snapshots being received or waiting to be installed.
func (c *Cluster) StagedSnapshots(node NodeID) []string {
	c.mu.Lock()
	fs, dir := vfs.FS(c.fs[node]), "data"
	if d := c.dirs[node]; d != "" {
		fs, dir = vfs.Default, d
	}
	c.mu.Unlock()
	names, _ := fs.List(fs.PathJoin(dir, store.StagingDir))
	return names
}

// Restart starts a crashed node again on what its disk kept.
func (c *Cluster) Restart(node multiraft.NodeID) {
	c.t.Helper()
	if c.Host(node) != nil {
		c.t.Fatalf("restart node %d: it is running", node)
	}
	c.start(node)
}

// Metric returns the sum of a metric's series on a node (its current
// incarnation), 0 if it has none.
func (c *Cluster) Metric(node multiraft.NodeID, name string) float64 {
	return c.Metrics(node)[name]
}

// Sum adds a metric up over the running nodes.
func (c *Cluster) Sum(name string) float64 {
	var s float64
	for _, n := range c.Nodes() {
		s += c.Metric(n, name)
	}
	return s
}

// gather reads a node's registry (its current incarnation's).
func (c *Cluster) gather(node NodeID) []*dto.MetricFamily {
	c.mu.Lock()
	reg := c.regs[node]
	c.mu.Unlock()
	families, err := reg.Gather()
	if err != nil {
		c.t.Fatalf("gather node %d: %v", node, err)
	}
	return families
}

// Metrics returns the sum of each counter's and gauge's series on a node
// (for a histogram, its sample count), by metric name.
func (c *Cluster) Metrics(node NodeID) map[string]float64 {
	families := c.gather(node)
	sums := make(map[string]float64, len(families))
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sums[f.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sums[f.GetName()] += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sums[f.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sums
}

// MetricLabel returns the value of one labelled series of a counter or
// gauge on a node (summed over its other labels), 0 if it has none.
func (c *Cluster) MetricLabel(node NodeID, name, label, value string) float64 {
	var sum float64
	for _, f := range c.gather(node) {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// Host returns a node's host, nil while it is crashed.
func (c *Cluster) Host(node multiraft.NodeID) *multiraft.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[node]
}

// Nodes returns the node IDs of the running hosts, in order.
func (c *Cluster) Nodes() []multiraft.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []multiraft.NodeID
	for id := range c.hosts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// AppliedLog is what the tests read of a replica's state machine: the
// commands it applied, in order, and their log positions.
type AppliedLog interface {
	Log() [][]byte
	Positions() []multiraft.Command
	Len() int
}

// SM returns a node's kit state machine of a group (LogSM or DiskLogSM),
// nil if there is none (or the cluster runs the embedder's).
func (c *Cluster) SM(node NodeID, groupID GroupID) AppliedLog {
	sm, _ := c.StateMachine(node, groupID).(AppliedLog)
	return sm
}

// StateMachine returns the state machine a node's host made for a group,
// whichever factory made it, nil if none.
func (c *Cluster) StateMachine(node NodeID, groupID GroupID) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sms[node][groupID]
}

// CreateGroup creates a group on the given nodes as founding members.
func (c *Cluster) CreateGroup(groupID multiraft.GroupID, nodes ...multiraft.NodeID) {
	c.t.Helper()
	for _, n := range nodes {
		h := c.Host(n)
		if h == nil {
			c.t.Fatalf("create group %d on node %d: the node is down", groupID, n)
		}
		if err := h.CreateGroup(groupID, nodes); err != nil {
			c.t.Fatalf("create group %d on node %d: %v", groupID, n, err)
		}
	}
}

// CreateGroups creates groups 1..n on nodes 1, 2 and 3, waits until each
// has a leader, and returns their IDs.
func (c *Cluster) CreateGroups(n int) []multiraft.GroupID {
	c.t.Helper()
	ids := make([]multiraft.GroupID, 0, n)
	for g := multiraft.GroupID(1); g <= multiraft.GroupID(n); g++ {
		c.CreateGroup(g, 1, 2, 3)
		ids = append(ids, g)
	}
	c.WaitLeaders(ids)
	return ids
}

// Leader returns the node that serves as the group's leader, 0 if none.
func (c *Cluster) Leader(groupID multiraft.GroupID) multiraft.NodeID {
	for _, n := range c.Nodes() {
		h := c.Host(n)
		if h == nil {
			continue
		}
		if st, err := h.Status(groupID); err == nil && st.Serving {
			return n
		}
	}
	return 0
}

// WaitFor advances the clock one tick at a time until cond holds, failing
// the test after timeout of real time. Time moves only while the hosts are
// quiet (no group queued, no message or append waiting): a host that is
// merely slow (the race detector, a loaded machine) never sees its peers'
// election timers run out on it.
func (c *Cluster) WaitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.After(timeout)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for polls := 0; !cond(); polls++ {
		select {
		case <-deadline:
			c.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-poll.C:
		}
		if polls%2 == 0 && c.quiet() {
			c.Clock.Advance(c.TickInterval)
		}
	}
}

// TickUntil moves the clock a tick about every 10 ms, whether the hosts
// are quiet or not, until cond holds, failing the test after timeout of
// real time: for waits while a node's syncs are held or its log writer is
// full (WaitFor moves time only while every host is quiet).
func (c *Cluster) TickUntil(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	polls := 0
	await.Until(c.t, timeout, what, func() bool {
		if cond() {
			return true
		}
		if polls++; polls%10 == 0 {
			c.Clock.Advance(c.TickInterval)
		}
		return false
	})
}

// quiet reports whether no host has work queued (a worker may still be
// busy): WaitFor moves the clock only then, so a slow host does not see
// its peers' timers run out on it, yet time still moves under a steady load.
func (c *Cluster) quiet() bool {
	for _, n := range c.Nodes() {
		if !quietMetrics(c.Metrics(n), false) {
			return false
		}
	}
	return true
}

// quietMetrics reports whether a host's metrics show nothing queued
// (nothing waiting to be sent but heartbeats held for the next tick) and,
// if strict, nothing being processed.
func quietMetrics(m map[string]float64, strict bool) bool {
	if m["flotilla_scheduler_queue_depth"] != 0 || m["flotilla_store_log_queue_items"] != 0 {
		return false
	}
	if strict && m["flotilla_scheduler_processing"] != 0 {
		return false
	}
	return m["flotilla_transport_queue_messages"] == m["flotilla_transport_queue_heartbeats"]
}

// idle reports whether every host is idle: quiet, and no worker busy.
// Hosts are read one after the other, so one could become busy (a peer
// sent to it) after it was read: idle reads them all twice and also
// requires their activity counters not to have moved in between.
func (c *Cluster) idle() bool {
	first, ok := c.activity()
	if !ok {
		return false
	}
	second, ok := c.activity()
	return ok && slices.Equal(first, second)
}

// activity reads every host's activity counters, and whether each host
// looked idle.
func (c *Cluster) activity() ([]float64, bool) {
	var counters []float64
	for _, n := range c.Nodes() {
		m := c.Metrics(n)
		if !quietMetrics(m, true) {
			return nil, false
		}
		counters = append(counters, float64(n), m["flotilla_scheduler_processed_total"],
			m["flotilla_transport_frames_sent_total"], m["flotilla_transport_frames_received_total"])
	}
	return counters, true
}

// Do runs fn (with a context of one minute, ended with the test) while
// moving the clock until it returns, and returns its error: how tests
// make a host call that needs time to pass (elections, retransmissions)
// to complete.
func (c *Cluster) Do(what string, fn func(ctx context.Context) error) error {
	c.t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(c.t.Context(), time.Minute)
		defer cancel()
		done <- fn(ctx)
	}()
	var err error
	c.WaitFor(what, 2*time.Minute, func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	return err
}

// WaitGroup waits for wg while moving the clock, failing the test after
// timeout of real time: for calls made on many goroutines at once.
func (c *Cluster) WaitGroup(what string, timeout time.Duration, wg *sync.WaitGroup) {
	c.t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	c.WaitFor(what, timeout, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}

// WaitLeaders waits until every group has a serving leader.
func (c *Cluster) WaitLeaders(groups []multiraft.GroupID) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("leaders of %d groups", len(groups)), 60*time.Second, func() bool {
		for _, g := range groups {
			if c.Leader(g) == 0 {
				return false
			}
		}
		return true
	})
}

// Close stops every host.
func (c *Cluster) Close() {
	for _, n := range c.Nodes() {
		c.ReleaseSyncs(n)
	}
	for _, n := range c.Nodes() {
		if err := c.Host(n).Close(); err != nil {
			c.t.Errorf("close node %d: %v", n, err)
		}
	}
}

// SpreadLeaders moves leadership so that group ids[i] is led by the
// (i mod N)-th running host, as benchmarks and traffic counts want.
func (c *Cluster) SpreadLeaders(ids []multiraft.GroupID) {
	c.t.Helper()
	nodes := c.Nodes()
	slices.Sort(nodes)
	err := c.Do("spreading leaders", func(ctx context.Context) error {
		var wg sync.WaitGroup
		errs := make(chan error, len(ids))
		for i, g := range ids {
			want := nodes[i%len(nodes)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					leader := c.Leader(g)
					if leader == want {
						return
					}
					if leader == 0 {
						continue
					}
					if err := c.Host(leader).TransferLeadership(ctx, g, want); err != nil && ctx.Err() == nil &&
						!errors.Is(err, multiraft.ErrNotLeader) {
						errs <- fmt.Errorf("group %d: transfer to %d: %w", g, want, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return errors.Join(slices.Collect(func(yield func(error) bool) {
			for err := range errs {
				if !yield(err) {
					return
				}
			}
		})...)
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// Step moves the clock one tick and waits until every host has taken the
// tick (its scheduler ticked and its transport flushed) and is idle again.
func (c *Cluster) Step() {
	c.t.Helper()
	c.StepFor(c.t)
}

// StepFor is Step reporting to t: a fuzz target's, whose cluster was made
// with the *testing.F.
func (c *Cluster) StepFor(t TB) {
	t.Helper()
	counts := func() (n float64) {
		for _, node := range c.Nodes() {
			n += c.Metric(node, "flotilla_scheduler_ticks_total") + c.Metric(node, "flotilla_transport_heartbeat_flushes_total")
		}
		return n
	}
	want := counts() + float64(2*len(c.Nodes()))
	c.Clock.Advance(c.TickInterval)
	await.Until(t, 60*time.Second, "the hosts to take the tick and go idle", func() bool { return counts() >= want && c.idle() })
}
