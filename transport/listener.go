package transport

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// LimitListener bounds the connections of l open at once to max: one
// over the bound is closed as soon as it is accepted (and counted in
// refused), so that a flood of connections costs a file descriptor for a
// moment, not the server's memory, and never queues behind the bound as
// golang.org/x/net/netutil's listener would. open shows the connections
// open. Either metric may be nil.
func LimitListener(l net.Listener, max int, open prometheus.Gauge, refused prometheus.Counter) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, max), open: open, refused: refused}
}

type limitListener struct {
	net.Listener
	slots   chan struct{}
	open    prometheus.Gauge
	refused prometheus.Counter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			if l.open != nil {
				l.open.Inc()
			}
			return &limitConn{Conn: c, release: func() {
				<-l.slots
				if l.open != nil {
					l.open.Dec()
				}
			}}, nil
		default:
			_ = c.Close()
			if l.refused != nil {
				l.refused.Inc()
			}
		}
	}
}

// limitConn gives its slot back when closed, once.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
