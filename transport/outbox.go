package transport

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/metrics"
)

// lane is one of a peer's two queues, each with its own sender and stream.
type lane int

const (
	// laneControl carries the failure detector's messages (see isControl)
	// and liveness records.
	laneControl lane = iota
	// laneData carries everything else: appends and their responses,
	// ReadIndex traffic, removal notices.
	laneData
	numLanes
)

func (l lane) String() string {
	if l == laneControl {
		return "control"
	}
	return "data"
}

// outbox is the send queue to one peer, with the peer's metric series
// resolved once.
//
// It has two lanes, and each lane has its own sender goroutine
// (core.sendLoop) and its own stream to the peer, so under any load of
// appends a heartbeat or a vote waits for nothing but other control
// messages: not in the queue, not in a frame, not behind a data frame
// the peer's flow control holds back. Each lane has its own bound, so a
// data lane full of appends never drops a heartbeat, and its own down
// state: a lane whose stream failed drops what is pushed to it until its
// sender reconnects.
type outbox struct {
	to    NodeID
	label string
	wake  [numLanes]chan struct{} // capacity 1: "there is something to send"
	// sent is set when a frame with messages goes out on either lane and
	// cleared by a flush: a peer that nothing went to since the last flush
	// gets a liveness record.
	sent atomic.Bool

	queued, heartbeats, control, up                             prometheus.Gauge
	sentMsgs, frames, bytes, coalesced, dropped, failures, live prometheus.Counter
	reconnects                                                  prometheus.Counter

	mu struct {
		sync.Mutex
		ctrl  []Envelope // the control lane
		data  []Envelope // the data lane
		bytes int        // of the data lane
		// due is how many messages at the head of the control lane its
		// sender must send at its next turn; the rest are plain
		// heartbeats that came after the last flush and wait for the next
		// one. The data lane is always due.
		due   int
		alive bool           // a liveness record is due
		down  [numLanes]bool // the last attempt to reach the peer on the lane failed
	}
}

func newOutbox(to NodeID, m *metrics.Transport) *outbox {
	l := strconv.FormatUint(to, 10)
	m.InitPeer(l)
	return &outbox{
		to: to, label: l, wake: [numLanes]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)},
		queued: m.QueueMessages.WithLabelValues(l), heartbeats: m.QueueHeartbeats.WithLabelValues(l),
		control: m.QueueControl.WithLabelValues(l), up: m.StreamUp.WithLabelValues(l),
		sentMsgs: m.MessagesSent.WithLabelValues(l), frames: m.FramesSent.WithLabelValues(l), bytes: m.BytesSent.WithLabelValues(l),
		coalesced: m.HeartbeatsCoalesced.WithLabelValues(l), dropped: m.QueueDropped.WithLabelValues(l),
		failures: m.SendFailures.WithLabelValues(l), reconnects: m.Reconnects.WithLabelValues(l),
		live: m.LivenessSent.WithLabelValues(l),
	}
}

// push queues a batch within the bounds and returns what it dropped. Only
// plain heartbeats are queued without waking the control lane's sender:
// they wait for the next flush.
func (p *outbox) push(batch []Envelope, cfg *Config) (dropped []Envelope) {
	var urgent [numLanes]bool
	p.mu.Lock()
	for _, e := range batch {
		if isControl(e.Message) {
			if p.mu.down[laneControl] || len(p.mu.ctrl) >= cfg.MaxQueueControl {
				dropped = append(dropped, e)
				continue
			}
			p.mu.ctrl = append(p.mu.ctrl, e)
			// Only a plain heartbeat (no ReadIndex context) may wait for
			// the next flush.
			if !coalescible(e.Message) || len(e.Message.GetContext()) > 0 {
				urgent[laneControl] = true
			}
			continue
		}
		size := messageSize(e.Message)
		if p.mu.down[laneData] || len(p.mu.data) >= cfg.MaxQueueMessages || p.mu.bytes+size > cfg.MaxQueueBytes {
			dropped = append(dropped, e)
			continue
		}
		p.mu.data = append(p.mu.data, e)
		p.mu.bytes += size
		urgent[laneData] = true
	}
	if urgent[laneControl] {
		p.mu.due = len(p.mu.ctrl) // what waited rides along
	}
	p.setGaugesLocked()
	p.mu.Unlock()
	for l, u := range urgent {
		if u {
			p.signal(lane(l))
		}
	}
	if len(dropped) > 0 {
		p.dropped.Add(float64(len(dropped)))
	}
	return dropped
}

func (p *outbox) signal(l lane) {
	select {
	case p.wake[l] <- struct{}{}:
	default:
	}
}

// flush releases the plain heartbeats waiting in the control lane: they
// go with its sender's next frame. If nothing went to the peer since the
// last flush and nothing waits, a liveness record is due instead. It
// reports whether the control lane's sender has anything to send.
func (p *outbox) flush() bool {
	sent := p.sent.Swap(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.due = len(p.mu.ctrl)
	if p.mu.due == 0 && len(p.mu.data) == 0 && !sent && !p.mu.down[laneControl] {
		p.mu.alive = true
	}
	p.setGaugesLocked()
	return p.mu.due > 0 || p.mu.alive
}

// updateGauges publishes the queue's length. The sender calls it after a
// batch is handed over, so the gauges never show an empty queue while
// messages are between the queue and the peer.
func (p *outbox) updateGauges() {
	p.mu.Lock()
	p.setGaugesLocked()
	p.mu.Unlock()
}

// setGaugesLocked publishes the queue's state; under the lock, so that
// gauges are never set out of order.
func (p *outbox) setGaugesLocked() {
	p.queued.Set(float64(len(p.mu.ctrl) + len(p.mu.data)))
	p.control.Set(float64(len(p.mu.ctrl)))
	p.heartbeats.Set(float64(len(p.mu.ctrl) - p.mu.due))
}

// take returns a lane's messages due (in spare's storage), and for the
// control lane whether a liveness record is due (only when nothing else
// is: any frame says the sender is alive). Heartbeats queued after the
// last flush stay for the next one: a flush sends exactly what waited for
// it, so each tick's heartbeats leave together on the next tick.
func (p *outbox) take(l lane, spare []Envelope) (out []Envelope, alive bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l == laneData {
		out = append(spare[:0], p.mu.data...)
		clear(p.mu.data)
		p.mu.data, p.mu.bytes = p.mu.data[:0], 0
		return out, false
	}
	n := p.mu.due
	out = append(spare[:0], p.mu.ctrl[:n]...)
	rest := copy(p.mu.ctrl, p.mu.ctrl[n:])
	clear(p.mu.ctrl[rest:])
	p.mu.ctrl, p.mu.due = p.mu.ctrl[:rest], 0
	alive, p.mu.alive = p.mu.alive && len(out) == 0, false
	return out, alive
}

// setDown marks a lane down (messages for it are dropped at once and
// reported unreachable) or up again; going down empties the lane, and
// returns what it held. The peer's stream gauge is up while no lane is
// down.
func (p *outbox) setDown(l lane, down bool) []Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.down[l] = down
	var q []Envelope
	if down {
		if l == laneControl {
			q = p.mu.ctrl
			p.mu.ctrl, p.mu.due, p.mu.alive = nil, 0, false
		} else {
			q = p.mu.data
			p.mu.data, p.mu.bytes = nil, 0
		}
	}
	if p.mu.down[laneControl] || p.mu.down[laneData] {
		p.up.Set(0)
	} else {
		p.up.Set(1)
	}
	p.setGaugesLocked()
	return q
}

// backoff is the wait before the next attempt to reach a peer:
// exponential from minBackoff to max, with 25% jitter either way so that
// the hosts of a restarted peer do not all come back at once.
type retryBackoff struct {
	cur, max time.Duration
}

const minBackoff = 20 * time.Millisecond

func (b *retryBackoff) next() time.Duration {
	b.cur = min(max(2*b.cur, minBackoff), b.max)
	jitter := time.Duration(rand.Int64N(int64(b.cur)/2+1)) - b.cur/4
	return b.cur + jitter
}

func (b *retryBackoff) reset() { b.cur = 0 }
