package transport

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// Network connects the Memory transports of one process. Its Filters are
// consulted by every node on it (unless a node's Config names others).
type Network struct {
	*Filters
	mu struct {
		sync.RWMutex
		nodes map[NodeID]*Memory
	}
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	n := &Network{Filters: NewFilters()}
	n.mu.nodes = make(map[NodeID]*Memory)
	return n
}

// node returns the started transport of a node, or nil.
func (n *Network) node(id NodeID) *Memory {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.mu.nodes[id]
}

// Memory is the in-memory Transport of one node on a Network. Frames are
// encoded and decoded as over gRPC and go through the same queues,
// framing, coalescing, checks and filters; only the socket is missing.
type Memory struct {
	*core
	net *Network
}

var _ Transport = (*Memory)(nil)

// NewMemory creates node id's transport on the network. A node restarts
// with a new one for the same id once its host closed the old.
func NewMemory(net *Network, id NodeID, cfg Config) *Memory {
	if cfg.Filters == nil {
		cfg.Filters = net.Filters
	}
	t := &Memory{net: net}
	t.core = newCore(id, cfg, t)
	return t
}

// Start registers the node on the network; from now on it receives.
func (t *Memory) Start(h Handler, env Env) error {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	if _, ok := t.net.mu.nodes[t.self]; ok {
		return fmt.Errorf("transport: node %d already on the network", t.self)
	}
	if err := t.core.start(h, env); err != nil {
		return err
	}
	t.net.mu.nodes[t.self] = t
	return nil
}

// Close takes the node off the network and stops its goroutines.
func (t *Memory) Close() error {
	t.net.mu.Lock()
	if t.net.mu.nodes[t.self] == t {
		delete(t.net.mu.nodes, t.self)
	}
	t.net.mu.Unlock()
	t.core.close() // its context's end cuts the streams of inbound snapshots
	t.core.receiving.Wait()
	return nil
}

// memLink hands frames to a peer on the network.
type memLink struct {
	t  *Memory
	to NodeID
}

// send decodes the frame as the receiving end of a stream would, so every
// in-memory cluster test runs the wire encoding too.
func (l memLink) send(frame *[]byte) error {
	return l.t.net.Inject(l.t.self, l.to, *frame)
}

func (memLink) close() {}

func (t *Memory) dial(_ context.Context, to NodeID) (link, error) {
	if t.net.node(to) == nil {
		return nil, ErrUnknownPeer
	}
	return memLink{t: t, to: to}, nil
}

// streamSnapshot pipes the data from a writer goroutine to the peer's
// handler; the writer starts at the handler's first read, so a refusal
// comes before any data is produced.
func (t *Memory) streamSnapshot(ctx context.Context, to NodeID, snap *OutboundSnapshot, write func(io.Writer) error) error {
	target := t.net.node(to)
	if target == nil {
		return ErrUnknownPeer
	}
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	var started atomic.Bool
	start := sync.OnceFunc(func() {
		started.Store(true)
		go func() {
			err := write(pw)
			pw.CloseWithError(err)
			writeErr <- err
		}()
	})
	data := readerFunc(func(p []byte) (int, error) { start(); return pr.Read(p) })
	// Closing the reader unblocks a writer whose data the receiver
	// stopped reading, or that outlives this transport; and a receiver
	// whose transport closes, which waits for its receives to end.
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ErrClosed) })
	stopTarget := context.AfterFunc(target.ctx, func() { pr.CloseWithError(ErrClosed) })
	recvErr := target.receiveSnapshot(t.self, &InboundSnapshot{GroupID: snap.GroupID, Message: snap.Message, Size: snap.Size, Data: data})
	pr.CloseWithError(io.ErrClosedPipe)
	stop()
	stopTarget()
	if !started.Load() {
		return recvErr // refused before any data was produced
	}
	if err := <-writeErr; err != nil && err != io.ErrClosedPipe {
		return fmt.Errorf("transport: writing snapshot data: %w", err)
	}
	return recvErr
}

// readerFunc is an io.Reader of a function.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (t *Memory) admin(ctx context.Context, to NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	target := t.net.node(to)
	if target == nil {
		return nil, ErrUnknownPeer
	}
	req.Handshake = &peerpb.Handshake{FromNode: t.self, ToNode: to}
	return target.receiveAdmin(ctx, t.self, req)
}

// Inject hands an encoded frame (a peerpb.Frame on the wire) to node to as
// if node from had sent it, through the same decoding, checks and filters
// as any frame: for probes and fuzzing, which play a peer that lies.
func (n *Network) Inject(from, to NodeID, frame []byte) error {
	target := n.node(to)
	if target == nil {
		return fmt.Errorf("%w: node %d", ErrUnknownPeer, to)
	}
	var in inFrame
	if err := decodeFrame(frame, &in); err != nil {
		return err
	}
	target.receiveFrame(from, &in)
	return nil
}
