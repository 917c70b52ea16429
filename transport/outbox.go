package transport

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/metrics"
)

// outbox is the send queue to one peer, bounded in messages and bytes, with
// the peer's metric series resolved once. Its sender goroutine (core.
// sendLoop) drains it into frames.
type outbox struct {
	to    NodeID
	label string
	wake  chan struct{} // capacity 1: "there is something to send"

	queued, heartbeats, up                            prometheus.Gauge
	sent, frames, bytes, coalesced, dropped, failures prometheus.Counter
	reconnects                                        prometheus.Counter

	mu struct {
		sync.Mutex
		queue []Envelope
		bytes int // of the messages that are not heartbeats
		hbs   int // heartbeats and responses in the queue (their own bound)
		// due is how many messages at the head of the queue the sender
		// must send at its next turn; the rest are plain heartbeats that
		// came after the last flush and wait for the next one.
		due  int
		down bool // the last attempt to reach the peer failed
	}
}

func newOutbox(to NodeID, m *metrics.Transport) *outbox {
	l := strconv.FormatUint(to, 10)
	m.InitPeer(l)
	return &outbox{
		to: to, label: l, wake: make(chan struct{}, 1),
		queued: m.QueueMessages.WithLabelValues(l), heartbeats: m.QueueHeartbeats.WithLabelValues(l), up: m.StreamUp.WithLabelValues(l),
		sent: m.MessagesSent.WithLabelValues(l), frames: m.FramesSent.WithLabelValues(l), bytes: m.BytesSent.WithLabelValues(l),
		coalesced: m.HeartbeatsCoalesced.WithLabelValues(l), dropped: m.QueueDropped.WithLabelValues(l),
		failures: m.SendFailures.WithLabelValues(l), reconnects: m.Reconnects.WithLabelValues(l),
	}
}

// push queues a batch within the bounds and returns what it dropped. Only
// plain heartbeats are queued without waking the sender: they wait for the
// next frame or the next flush.
func (p *outbox) push(batch []Envelope, cfg *Config) (dropped []Envelope) {
	urgent := false
	p.mu.Lock()
	for _, e := range batch {
		hb := coalescible(e.Message)
		size, full := 0, p.mu.hbs >= cfg.MaxQueueHeartbeats
		if !hb {
			size = messageSize(e.Message)
			full = len(p.mu.queue)-p.mu.hbs >= cfg.MaxQueueMessages || p.mu.bytes+size > cfg.MaxQueueBytes
		}
		if p.mu.down || full {
			dropped = append(dropped, e)
			continue
		}
		p.mu.queue = append(p.mu.queue, e)
		if hb {
			p.mu.hbs++
		} else {
			p.mu.bytes += size
		}
		// Only a plain heartbeat (no ReadIndex context) may wait for the
		// next frame or flush.
		if !hb || len(e.Message.GetContext()) > 0 {
			urgent = true
			p.mu.due = len(p.mu.queue) // what waited rides along
		}
	}
	p.setGaugesLocked()
	p.mu.Unlock()
	if urgent {
		p.signal()
	}
	if len(dropped) > 0 {
		p.dropped.Add(float64(len(dropped)))
	}
	return dropped
}

func (p *outbox) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// flush releases the plain heartbeats waiting in the queue: they go with
// the sender's next frame. It reports whether there was anything to send.
func (p *outbox) flush() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.due = len(p.mu.queue)
	p.setGaugesLocked()
	return p.mu.due > 0
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
	p.queued.Set(float64(len(p.mu.queue)))
	p.heartbeats.Set(float64(len(p.mu.queue) - p.mu.due))
}

// take returns the messages due (in spare's storage, or the queue's own).
// Heartbeats queued after the last flush stay for the next one: a flush
// sends exactly what waited for it, so each tick's heartbeats leave
// together on the next tick.
func (p *outbox) take(spare []Envelope) []Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.mu.due
	p.mu.due = 0
	if n == len(p.mu.queue) {
		q := p.mu.queue
		p.mu.queue, p.mu.bytes, p.mu.hbs = spare[:0], 0, 0
		return q
	}
	out := append(spare[:0], p.mu.queue[:n]...)
	rest := copy(p.mu.queue, p.mu.queue[n:])
	clear(p.mu.queue[rest:])
	p.mu.queue = p.mu.queue[:rest]
	p.mu.bytes, p.mu.hbs = 0, 0
	for _, e := range p.mu.queue {
		if coalescible(e.Message) {
			p.mu.hbs++
		} else {
			p.mu.bytes += messageSize(e.Message)
		}
	}
	return out
}

// setDown marks the peer down (messages to it are dropped at once and
// reported unreachable) or up again; going down empties the queue, and
// returns what it held.
func (p *outbox) setDown(down bool) []Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.down = down
	var q []Envelope
	if down {
		q = p.mu.queue
		p.mu.queue, p.mu.bytes, p.mu.due, p.mu.hbs = nil, 0, 0, 0
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
