package transport

import (
	"container/list"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// LimitListener bounds the connections of l open at once to max. A
// connection over the bound is closed as soon as it is accepted (counted
// in refused): a flood of connections costs a file descriptor for a
// moment, not the server's memory, and never queues behind the bound as
// golang.org/x/net/netutil's listener would.
//
// With TLS, a connection counts as unauthenticated until its handshake
// succeeds (Authenticated). When the bound is reached, the oldest
// unauthenticated connection is closed to make room, rather than the new
// one refused: connections that never handshake, however many, cannot
// keep an authenticated peer out (each would have to outlast the peer's
// handshake of a few milliseconds). open shows the connections open.
// Either metric may be nil.
func LimitListener(l net.Listener, max int, open prometheus.Gauge, refused prometheus.Counter) *LimitedListener {
	return &LimitedListener{Listener: l, max: max, open: open, refused: refused}
}

// LimitedListener is a LimitListener.
type LimitedListener struct {
	net.Listener
	max     int
	open    prometheus.Gauge
	refused prometheus.Counter
	evict   bool // close the oldest unauthenticated connection when full

	mu struct {
		sync.Mutex
		n       int
		pending list.List // of *limitConn, unauthenticated, oldest first
	}
}

// EvictUnauthenticated makes the listener close the oldest connection not
// yet authenticated when it is full (see LimitListener). Call it before
// serving, and only where handshakes mark connections Authenticated.
func (l *LimitedListener) EvictUnauthenticated() { l.evict = true }

// Accept accepts the next connection within the bound.
func (l *LimitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitConn{Conn: c, l: l}
		l.mu.Lock()
		var victim *limitConn
		if l.mu.n >= l.max && l.evict && l.mu.pending.Len() > 0 {
			victim = l.mu.pending.Remove(l.mu.pending.Front()).(*limitConn)
			victim.elem = nil
			l.mu.n-- // its slot is the new one's; its Close gives back nothing
			victim.released = true
		}
		if l.mu.n >= l.max {
			l.mu.Unlock()
			_ = c.Close()
			if l.refused != nil {
				l.refused.Inc()
			}
			continue
		}
		l.mu.n++
		lc.elem = l.mu.pending.PushBack(lc)
		l.mu.Unlock()
		if victim != nil {
			_ = victim.Conn.Close()
			if l.refused != nil {
				l.refused.Inc()
			}
		} else if l.open != nil {
			l.open.Inc()
		}
		return lc, nil
	}
}

// Authenticated marks a connection this listener accepted as past its
// handshake: it is no longer one to close to make room. Other
// connections are ignored.
func (l *LimitedListener) Authenticated(c net.Conn) {
	lc, ok := c.(*limitConn)
	if !ok || lc.l != l {
		return
	}
	l.mu.Lock()
	if lc.elem != nil {
		l.mu.pending.Remove(lc.elem)
		lc.elem = nil
	}
	l.mu.Unlock()
}

// limitConn gives its slot back when closed, once.
type limitConn struct {
	net.Conn
	l        *LimitedListener
	elem     *list.Element // in l.mu.pending while unauthenticated
	released bool          // its slot is given back (under l.mu)
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	l := c.l
	l.mu.Lock()
	if c.released {
		l.mu.Unlock()
		return err
	}
	c.released = true
	if c.elem != nil {
		l.mu.pending.Remove(c.elem)
		c.elem = nil
	}
	l.mu.n--
	l.mu.Unlock()
	if l.open != nil {
		l.open.Dec()
	}
	return err
}
