package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/time/rate"

	"github.com/flotilla-io/flotilla/metrics"
	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// driver is what a transport implementation adds to the core: how frames,
// snapshots and admin calls reach a peer.
type driver interface {
	// dial opens the stream of Raft frames to a peer.
	dial(ctx context.Context, to NodeID) (link, error)
	// streamSnapshot sends one snapshot; write produces its data.
	streamSnapshot(ctx context.Context, to NodeID, snap *OutboundSnapshot, write func(io.Writer) error) error
	// admin makes a control call on a peer.
	admin(ctx context.Context, to NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error)
}

// link is an open stream of frames to one peer, used by its sender only.
type link interface {
	// send writes an encoded frame and takes ownership of its buffer.
	send(frame *[]byte) error
	close()
}

// core is the part of a transport that does not depend on how bytes move:
// the per-peer queues and senders, framing and heartbeat coalescing,
// reconnection, the inbound checks and filters, and the snapshot limits.
type core struct {
	self NodeID
	cfg  Config
	m    *metrics.Transport
	logp atomic.Pointer[slog.Logger] // the host's may replace the default at start
	drv  driver
	// ownLog and ownMetrics: the config left them unset, so the host's
	// environment may provide them at start. unregister undoes that.
	ownLog, ownMetrics bool
	unregister         func()
	limiter            *rate.Limiter // snapshot bytes sent; nil: unlimited
	incarnation        atomic.Uint64 // the host's, set at start; in every frame

	sendSlots, recvSlots chan struct{}

	ctx    context.Context // cancelled by close: stops every goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// receiving counts the snapshot receives in the host's handler. A
	// driver's Close waits for them once it has cut their streams: the
	// host closes its store after its transport, and a receive still
	// running would write (or remove) its staged table after that.
	receiving sync.WaitGroup

	mu struct {
		sync.Mutex
		h       Handler
		peers   map[NodeID]*outbox
		in      map[NodeID]*inCounters
		started bool
		closed  bool
		delayed map[*time.Timer]struct{}
	}
}

// inCounters are a peer's inbound series, resolved once.
type inCounters struct {
	label                             string
	messages, frames, bytes, liveness prometheus.Counter
}

func newCore(self NodeID, cfg Config, drv driver) *core {
	ownLog, ownMetrics := cfg.Logger == nil, cfg.Metrics == nil
	cfg = cfg.withDefaults()
	c := &core{self: self, cfg: cfg, m: cfg.Metrics, drv: drv, ownLog: ownLog, ownMetrics: ownMetrics,
		sendSlots: make(chan struct{}, cfg.MaxSnapshotSends), recvSlots: make(chan struct{}, cfg.MaxSnapshotRecvs)}
	c.logp.Store(cfg.Logger)
	if cfg.SnapshotRateBytes > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.SnapshotRateBytes), cfg.SnapshotChunkBytes)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.peers = make(map[NodeID]*outbox)
	c.mu.in = make(map[NodeID]*inCounters)
	c.mu.delayed = make(map[*time.Timer]struct{})
	return c
}

// start sets the handler, and takes the host's logger and registers the
// metrics where the config left them to the host.
func (c *core) start(h Handler, env Env) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mu.closed:
		return ErrClosed
	case c.mu.started:
		return fmt.Errorf("transport: node %d started twice", c.self)
	case env.NodeID != 0 && env.NodeID != c.self:
		return fmt.Errorf("%w: the transport was built for node %d, the host is node %d", ErrInvalidConfig, c.self, env.NodeID)
	}
	if c.ownMetrics && env.Registerer != nil {
		unregister, err := metrics.Register(env.Registerer, c.m)
		if err != nil {
			return fmt.Errorf("%w: node %d: %w", ErrInvalidConfig, c.self, err)
		}
		c.unregister = unregister
	}
	if c.ownLog && env.Logger != nil {
		c.logp.Store(env.Logger.With("component", "transport"))
	}
	c.mu.h, c.mu.started = h, true
	c.incarnation.Store(env.Incarnation)
	return nil
}

// log is the transport's logger.
func (c *core) log() *slog.Logger { return c.logp.Load() }

// close stops every goroutine; queued and delayed messages are dropped, as
// a crash would drop them.
func (c *core) close() {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return
	}
	c.mu.closed = true
	for t := range c.mu.delayed {
		t.Stop()
	}
	clear(c.mu.delayed)
	unregister := c.unregister
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	if unregister != nil {
		unregister()
	}
}

func (c *core) handler() Handler {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.h
}

// addPeer creates a peer's queue and sender (once) so its metric series
// exist from the moment it is known; nil once closed.
func (c *core) addPeer(to NodeID) *outbox {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil
	}
	p, ok := c.mu.peers[to]
	if !ok {
		p = newOutbox(to, c.m)
		c.mu.peers[to] = p
		c.wg.Add(int(numLanes))
		go c.sendLoop(p, laneControl)
		go c.sendLoop(p, laneData)
	}
	return p
}

// Send queues a batch for a peer. It never blocks: what does not fit, or
// is for a peer that is down, is dropped and reported unreachable.
func (c *core) Send(to NodeID, batch []Envelope) {
	p := c.addPeer(to)
	if p == nil {
		return
	}
	if dropped := p.push(batch, &c.cfg); len(dropped) > 0 {
		c.unreachable(to, dropped)
	}
}

func (c *core) unreachable(to NodeID, dropped []Envelope) {
	if h := c.handler(); h != nil && len(dropped) > 0 {
		h.HandleUnreachable(to, dropped)
	}
}

// Flush releases the plain heartbeats waiting for every peer: each peer's
// sender sends them, with whatever else is queued, in one frame.
func (c *core) Flush() {
	c.mu.Lock()
	peers := make([]*outbox, 0, len(c.mu.peers))
	for _, p := range c.mu.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	for _, p := range peers {
		if p.flush() {
			p.signal(laneControl)
		}
	}
	c.m.Flushes.Inc()
}

// sendLoop is the sender of one of a peer's lanes: it keeps the lane's
// own stream open (reconnecting with backoff), drains the lane into
// frames and sends them. A frame that fails is reported unreachable with
// everything queued behind it in the lane, and the lane is down until its
// next successful dial.
func (c *core) sendLoop(p *outbox, ln lane) {
	defer c.wg.Done()
	fr := newFramer(c.cfg)
	bo := retryBackoff{max: c.cfg.MaxBackoff}
	var (
		l      link
		retry  *time.Timer
		retryC <-chan time.Time
		spare  []Envelope
		wasUp  bool
	)
	down := func(err error) {
		c.log().Debug("peer unreachable", "peer", p.to, "lane", ln, "err", err)
		c.unreachable(p.to, p.setDown(ln, true))
		retry = time.NewTimer(bo.next())
		retryC = retry.C
	}
	defer func() {
		if l != nil {
			l.close()
		}
		if retry != nil {
			retry.Stop()
		}
		p.up.Set(0)
	}()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-p.wake[ln]:
		case <-retryC:
			retryC = nil
		}
		if l == nil {
			if retryC != nil {
				continue // backing off; the peer is down and nothing is queued
			}
			var err error
			if l, err = c.drv.dial(c.ctx, p.to); err != nil {
				l = nil
				down(err)
				continue
			}
			if wasUp {
				p.reconnects.Inc()
				c.log().Info("reconnected to peer", "peer", p.to, "lane", ln)
			}
			wasUp = true
			bo.reset()
			p.setDown(ln, false)
		}
		batch, alive := p.take(ln, spare)
		if !c.cfg.Filters.empty() {
			batch = c.filterOut(p, batch)
		}
		done := 0
		send := func(frame *[]byte, carried []Envelope, heartbeats int) bool {
			n := len(*frame)
			if err := l.send(frame); err != nil {
				p.failures.Inc()
				l.close()
				l = nil
				c.unreachable(p.to, batch[done:])
				down(err)
				return false
			}
			if len(carried) > 0 { // a liveness record does not excuse the next
				p.sent.Store(true)
			}
			done += len(carried)
			p.frames.Inc()
			p.sentMsgs.Add(float64(len(carried)))
			p.bytes.Add(float64(n))
			if heartbeats > 0 {
				p.coalesced.Add(float64(heartbeats))
			}
			return true
		}
		fr.incarnation = c.incarnation.Load()
		if alive {
			if send(fr.liveness(), nil, 0) {
				p.live.Inc()
			}
		}
		fr.pack(batch, send)
		clear(batch)
		spare = batch[:0]
		p.updateGauges()
	}
}

// inbound returns a peer's inbound series. A peer first heard from gets a
// queue and sender too (if it had none), so that liveness records flow
// both ways whoever spoke first.
func (c *core) inbound(from NodeID) *inCounters {
	c.mu.Lock()
	in := c.mu.in[from]
	if in == nil {
		l := strconv.FormatUint(from, 10)
		in = &inCounters{label: l, messages: c.m.MessagesReceived.WithLabelValues(l),
			frames: c.m.FramesReceived.WithLabelValues(l), bytes: c.m.BytesReceived.WithLabelValues(l),
			liveness: c.m.LivenessReceived.WithLabelValues(l)}
		c.mu.in[from] = in
		c.mu.Unlock()
		c.addPeer(from)
		return in
	}
	c.mu.Unlock()
	return in
}

// receiveFrame counts a decoded frame from a peer (its records were
// checked as it was decoded), passes it through the filters and hands it
// to the host.
func (c *core) receiveFrame(from NodeID, f *inFrame) {
	h := c.handler()
	if h == nil {
		return
	}
	in := c.inbound(from)
	for _, bad := range [...]struct {
		n      int
		reason string
	}{{f.badHB, "malformed_heartbeat"}, {f.badMsg, "malformed_message"}} {
		if bad.n > 0 {
			c.m.ReceivedDropped.WithLabelValues(in.label, bad.reason).Add(float64(bad.n))
		}
	}
	envs := f.envs
	in.frames.Inc()
	in.bytes.Add(float64(f.size))
	in.messages.Add(float64(len(envs)))
	if f.liveness {
		in.liveness.Inc()
	}
	// Any frame says its sender is alive, unless a filter cut the sender
	// off: then only what passes counts, and a liveness record passes
	// the filters as a message of no group.
	alive := true
	if !c.cfg.Filters.empty() {
		if f.liveness {
			alive = !c.cfg.Filters.verdict(from, c.self, Envelope{Message: &pb.Message{}}).Drop
			if !alive {
				c.m.FilterDropped.WithLabelValues(in.label).Inc()
			}
		} else {
			alive = false
		}
		envs = c.filter(from, envs)
		alive = alive || len(envs) > 0
	}
	if alive {
		h.HandleAlive(from, f.incarnation)
	}
	if len(envs) > 0 {
		h.HandleMessages(from, envs)
	}
}

// filterOut drops what the filters drop before it leaves: a node cut off
// by a filter sends nothing from the moment the filter is in place, even
// over a real network where a frame sent earlier may arrive later. (Delays
// act on the receiving side only.)
func (c *core) filterOut(p *outbox, batch []Envelope) []Envelope {
	kept := batch[:0]
	for _, e := range batch {
		if c.cfg.Filters.verdict(c.self, p.to, e).Drop {
			c.m.FilterDropped.WithLabelValues(p.label).Inc()
			continue
		}
		kept = append(kept, e)
	}
	clear(batch[len(kept):])
	return kept
}

// filter applies the fault-injection filters to inbound messages.
func (c *core) filter(from NodeID, envs []Envelope) []Envelope {
	kept := envs[:0]
	for _, e := range envs {
		v := c.cfg.Filters.verdict(from, c.self, e)
		switch {
		case v.Drop:
			c.m.FilterDropped.WithLabelValues(strconv.FormatUint(from, 10)).Inc()
		case v.Delay > 0:
			c.deliverLater(from, e, v.Delay)
		default:
			kept = append(kept, e)
		}
	}
	return kept
}

func (c *core) deliverLater(from NodeID, e Envelope, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		_, live := c.mu.delayed[t]
		delete(c.mu.delayed, t)
		h := c.mu.h
		c.mu.Unlock()
		if live && h != nil {
			h.HandleMessages(from, []Envelope{e})
		}
	})
	c.mu.delayed[t] = struct{}{}
}

// SendSnapshot streams a snapshot to a peer in the background, within the
// host's limit of concurrent sends and its byte rate, and calls done with
// the outcome.
func (c *core) SendSnapshot(to NodeID, snap *OutboundSnapshot, done func(error)) {
	label := strconv.FormatUint(to, 10)
	fail := func(err error) {
		c.m.SnapshotsFailed.WithLabelValues(label).Inc()
		done(err)
	}
	select {
	case c.sendSlots <- struct{}{}:
	default:
		done(ErrTooManySnapshot) // a deferral (raft asks again), not a failed send
		return
	}
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		<-c.sendSlots
		fail(ErrClosed)
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() { <-c.sendSlots }()
		var sent int64
		write := func(w io.Writer) error {
			return snap.WriteData(&throttledWriter{ctx: c.ctx, w: w, lim: c.limiter, n: &sent})
		}
		var err error
		if snap.Measure != nil {
			s := *snap
			if s.Size, err = snap.Measure(); err != nil {
				err = fmt.Errorf("transport: measuring the snapshot of group %d: %w", snap.GroupID, err)
			}
			snap = &s
		}
		if err == nil {
			err = c.drv.streamSnapshot(c.ctx, to, snap, write)
		}
		c.m.SnapshotBytesSent.WithLabelValues(label).Add(float64(sent))
		if err != nil {
			c.log().Info("snapshot send failed", "peer", to, "group", snap.GroupID, "err", err)
			fail(err)
			return
		}
		c.m.SnapshotsSent.WithLabelValues(label).Inc()
		done(nil)
	}()
}

// receiveSnapshot admits an inbound snapshot (filters, the limit of
// concurrent receives) and hands it to the host.
func (c *core) receiveSnapshot(from NodeID, snap *InboundSnapshot) error {
	label := strconv.FormatUint(from, 10)
	m := snap.Message
	if snap.GroupID == 0 || m.GetType() != pb.MsgSnap || m.GetFrom() == 0 || m.GetTo() == 0 || m.GetSnapshot() == nil || snap.Size <= 0 {
		c.m.ReceivedDropped.WithLabelValues(label, "malformed_snapshot").Inc()
		return fmt.Errorf("%w: snapshot header", ErrMalformed)
	}
	v := c.cfg.Filters.verdict(from, c.self, Envelope{GroupID: snap.GroupID, Message: m})
	if v.Drop {
		c.m.FilterDropped.WithLabelValues(label).Inc()
		return ErrDropped
	}
	c.mu.Lock()
	h, closed := c.mu.h, c.mu.closed
	if h == nil || closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.receiving.Add(1)
	c.mu.Unlock()
	defer c.receiving.Done()
	select {
	case c.recvSlots <- struct{}{}:
	default:
		return ErrTooManySnapshot
	}
	defer func() { <-c.recvSlots }()
	cr := &countingReader{r: snap.Data, limit: snap.Size, cut: v.CutAfter}
	in := *snap
	in.Data = cr
	err := h.HandleSnapshot(from, &in)
	c.m.SnapshotBytesRecv.WithLabelValues(label).Add(float64(cr.n))
	if err == nil {
		c.m.SnapshotsReceived.WithLabelValues(label).Inc()
	}
	return err
}

// Admin makes a control call on a peer.
func (c *core) Admin(ctx context.Context, to NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	c.mu.Lock()
	closed := c.mu.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return c.drv.admin(ctx, to, req)
}

// receiveAdmin hands a control call to the host.
func (c *core) receiveAdmin(ctx context.Context, from NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	h := c.handler()
	if h == nil {
		return nil, ErrClosed
	}
	return h.HandleAdmin(ctx, from, req)
}

// throttledWriter passes snapshot data through the host's rate limiter, in
// pieces no larger than its burst.
type throttledWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
	n   *int64
}

func (t *throttledWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		piece := b
		if t.lim != nil {
			piece = piece[:min(len(piece), t.lim.Burst())]
			if err := t.lim.WaitN(t.ctx, len(piece)); err != nil {
				return written, err
			}
		}
		n, err := t.w.Write(piece)
		written += n
		*t.n += int64(n)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// countingReader counts what it reads and fails past limit bytes (or,
// injecting a fault, at cut bytes).
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
	cut   int64 // 0: none
}

func (c *countingReader) Read(b []byte) (int, error) {
	if c.cut > 0 {
		if c.n >= c.cut {
			return 0, fmt.Errorf("%w: snapshot stream cut after %d bytes (a filter)", ErrDropped, c.n)
		}
		b = b[:min(int64(len(b)), c.cut-c.n)]
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	switch {
	case c.n > c.limit:
		return n, fmt.Errorf("%w: snapshot data past the %d bytes announced", ErrMalformed, c.limit)
	case err == io.EOF && c.n < c.limit:
		return n, fmt.Errorf("%w: snapshot data ended at %d of the %d bytes announced", ErrMalformed, c.n, c.limit)
	}
	return n, err
}
