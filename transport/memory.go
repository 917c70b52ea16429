package transport

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/metrics"
)

// Network connects the Memory transports of one process and holds the
// filter chain every message passes through.
type Network struct {
	mu struct {
		sync.RWMutex
		nodes   map[NodeID]*Memory
		filters map[int]Filter
		nextID  int
	}
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	n := &Network{}
	n.mu.nodes = make(map[NodeID]*Memory)
	n.mu.filters = make(map[int]Filter)
	return n
}

// AddFilter adds a filter to the chain and returns the function that
// removes it. A message is dropped if any filter drops it, and delayed by
// the longest delay any filter asks for.
func (n *Network) AddFilter(f Filter) (remove func()) {
	n.mu.Lock()
	id := n.mu.nextID
	n.mu.nextID++
	n.mu.filters[id] = f
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		delete(n.mu.filters, id)
		n.mu.Unlock()
	}
}

// ClearFilters removes every filter: the network heals.
func (n *Network) ClearFilters() {
	n.mu.Lock()
	clear(n.mu.filters)
	n.mu.Unlock()
}

func (n *Network) verdict(from, to NodeID, e Envelope) Verdict {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var v Verdict
	for _, f := range n.mu.filters {
		fv := f(from, to, e)
		v.Drop = v.Drop || fv.Drop
		v.Delay = max(v.Delay, fv.Delay)
	}
	return v
}

// node returns the started transport of a node, or nil.
func (n *Network) node(id NodeID) *Memory {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.mu.nodes[id]
}

// MemoryConfig bounds a Memory transport.
type MemoryConfig struct {
	// MaxQueueMessages and MaxQueueBytes bound each peer's send queue.
	// Defaults 10,000 messages and 64 MiB.
	MaxQueueMessages int
	MaxQueueBytes    int
	// MaxConcurrentSnapshots bounds snapshot sends in flight. Default 4.
	MaxConcurrentSnapshots int
	// Metrics receives the figures. Default: an unregistered set.
	Metrics *metrics.Transport
}

func (c *MemoryConfig) fill() {
	if c.MaxQueueMessages <= 0 {
		c.MaxQueueMessages = 10000
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 64 << 20
	}
	if c.MaxConcurrentSnapshots <= 0 {
		c.MaxConcurrentSnapshots = 4
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewTransport(nil)
	}
}

// Memory is the in-memory Transport of one node on a Network.
type Memory struct {
	net  *Network
	id   NodeID
	cfg  MemoryConfig
	m    *metrics.Transport
	snap chan struct{} // semaphore of snapshot sends

	mu struct {
		sync.Mutex
		h       Handler
		peers   map[NodeID]*memPeer
		closed  bool
		delayed map[*time.Timer]struct{}
	}
	stop chan struct{}
	wg   sync.WaitGroup
}

var _ Transport = (*Memory)(nil)

// NewMemory creates node id's transport on the network.
func NewMemory(net *Network, id NodeID, cfg MemoryConfig) *Memory {
	cfg.fill()
	t := &Memory{net: net, id: id, cfg: cfg, m: cfg.Metrics,
		snap: make(chan struct{}, cfg.MaxConcurrentSnapshots), stop: make(chan struct{})}
	t.mu.peers = make(map[NodeID]*memPeer)
	t.mu.delayed = make(map[*time.Timer]struct{})
	return t
}

// Start registers the node on the network; from now on it receives.
func (t *Memory) Start(h Handler) error {
	t.mu.Lock()
	t.mu.h = h
	t.mu.Unlock()
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	if _, ok := t.net.mu.nodes[t.id]; ok {
		return fmt.Errorf("transport: node %d already on the network", t.id)
	}
	t.net.mu.nodes[t.id] = t
	return nil
}

// Close takes the node off the network and stops its goroutines. Queued
// and delayed messages are dropped, as a crash would drop them.
func (t *Memory) Close() error {
	t.net.mu.Lock()
	if t.net.mu.nodes[t.id] == t {
		delete(t.net.mu.nodes, t.id)
	}
	t.net.mu.Unlock()
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return nil
	}
	t.mu.closed = true
	for timer := range t.mu.delayed {
		timer.Stop()
	}
	clear(t.mu.delayed)
	t.mu.Unlock()
	close(t.stop)
	t.wg.Wait()
	return nil
}

// memPeer is the send queue to one peer and its sender goroutine.
type memPeer struct {
	to    NodeID
	label string
	wake  chan struct{}
	mu    struct {
		sync.Mutex
		queue []Envelope
		bytes int
	}
}

// Send queues a batch for a peer; what does not fit is dropped and
// reported unreachable.
func (t *Memory) Send(to NodeID, batch []Envelope) {
	p := t.peer(to)
	if p == nil {
		return // closed
	}
	var dropped []Envelope
	p.mu.Lock()
	for _, e := range batch {
		size := messageSize(e.Message)
		if len(p.mu.queue) >= t.cfg.MaxQueueMessages || p.mu.bytes+size > t.cfg.MaxQueueBytes {
			dropped = append(dropped, e)
			continue
		}
		p.mu.queue = append(p.mu.queue, e)
		p.mu.bytes += size
	}
	queued := len(p.mu.queue)
	p.mu.Unlock()
	t.m.QueueMessages.WithLabelValues(p.label).Set(float64(queued))
	select {
	case p.wake <- struct{}{}:
	default:
	}
	if len(dropped) > 0 {
		t.m.QueueDropped.WithLabelValues(p.label).Add(float64(len(dropped)))
		t.handler().HandleUnreachable(to, dropped)
	}
}

func (t *Memory) handler() Handler {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.h
}

// peer returns the queue to a peer, starting its sender on first use.
func (t *Memory) peer(to NodeID) *memPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return nil
	}
	p, ok := t.mu.peers[to]
	if !ok {
		p = &memPeer{to: to, label: strconv.FormatUint(to, 10), wake: make(chan struct{}, 1)}
		t.mu.peers[to] = p
		t.wg.Add(1)
		go t.sendLoop(p)
	}
	return p
}

// sendLoop drains a peer's queue: everything waiting goes as one batch.
func (t *Memory) sendLoop(p *memPeer) {
	defer t.wg.Done()
	var spare []Envelope
	for {
		select {
		case <-t.stop:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		batch := p.mu.queue
		p.mu.queue, p.mu.bytes = spare[:0], 0
		p.mu.Unlock()
		t.m.QueueMessages.WithLabelValues(p.label).Set(0)
		if len(batch) > 0 {
			t.deliver(p, batch)
		}
		clear(batch)
		spare = batch
	}
}

// deliver passes a batch through the filters to the peer's handler.
func (t *Memory) deliver(p *memPeer, batch []Envelope) {
	var now []Envelope
	var unreachable []Envelope
	target := t.net.node(p.to)
	for _, e := range batch {
		v := t.net.verdict(t.id, p.to, e)
		switch {
		case v.Drop:
			t.m.FilterDropped.WithLabelValues(p.label).Inc()
		case target == nil:
			unreachable = append(unreachable, e)
		case v.Delay > 0:
			t.deliverLater(p, e, v.Delay)
		default:
			now = append(now, e)
		}
	}
	if len(now) > 0 {
		t.m.BatchesSent.WithLabelValues(p.label).Inc()
		t.m.MessagesSent.WithLabelValues(p.label).Add(float64(len(now)))
		target.receive(t.id, now)
	}
	if len(unreachable) > 0 {
		t.handler().HandleUnreachable(p.to, unreachable)
	}
}

func (t *Memory) deliverLater(p *memPeer, e Envelope, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(d, func() {
		t.mu.Lock()
		_, live := t.mu.delayed[timer]
		delete(t.mu.delayed, timer)
		t.mu.Unlock()
		if !live {
			return
		}
		if target := t.net.node(p.to); target != nil {
			target.receive(t.id, []Envelope{e})
		}
	})
	t.mu.delayed[timer] = struct{}{}
}

// receive hands a batch to this node's handler.
func (t *Memory) receive(from NodeID, batch []Envelope) {
	h := t.handler()
	if h == nil {
		return
	}
	t.m.MessagesReceived.WithLabelValues(strconv.FormatUint(from, 10)).Add(float64(len(batch)))
	h.HandleMessages(from, batch)
}

// SendSnapshot streams the snapshot to the peer through a pipe: one
// goroutine writes the data, the peer's handler reads it.
func (t *Memory) SendSnapshot(to NodeID, snap *OutboundSnapshot, done func(error)) {
	label := strconv.FormatUint(to, 10)
	fail := func(err error) {
		t.m.SnapshotsFailed.WithLabelValues(label).Inc()
		done(err)
	}
	select {
	case t.snap <- struct{}{}:
	default:
		fail(ErrTooManySnapshot)
		return
	}
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		<-t.snap
		fail(ErrClosed)
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		defer func() { <-t.snap }()
		err := t.streamSnapshot(to, snap)
		if err != nil {
			fail(err)
			return
		}
		t.m.SnapshotsSent.WithLabelValues(label).Inc()
		done(nil)
	}()
}

func (t *Memory) streamSnapshot(to NodeID, snap *OutboundSnapshot) error {
	env := Envelope{GroupID: snap.GroupID, Message: snap.Message}
	if v := t.net.verdict(t.id, to, env); v.Drop {
		return ErrDropped
	}
	target := t.net.node(to)
	if target == nil {
		return ErrUnknownPeer
	}
	h := target.handler()
	if h == nil {
		return ErrUnknownPeer
	}
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := snap.WriteData(pw)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	// Closing the reader when the receiver is done unblocks a writer that
	// still has data the receiver refused to read.
	stopOnClose := make(chan struct{})
	go func() {
		select {
		case <-t.stop:
			pr.CloseWithError(ErrClosed)
		case <-stopOnClose:
		}
	}()
	recvErr := h.HandleSnapshot(t.id, &InboundSnapshot{GroupID: snap.GroupID, Message: snap.Message, Data: pr})
	pr.CloseWithError(io.ErrClosedPipe)
	close(stopOnClose)
	if err := <-writeErr; err != nil && err != io.ErrClosedPipe {
		return fmt.Errorf("transport: writing snapshot data: %w", err)
	}
	return recvErr
}
