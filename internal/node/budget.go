package node

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
)

// Budget bounds what the clients of a node may spend: connections,
// streams, bytes in flight, bytes per second. A zero field takes its
// default (DefaultBudget).
//
// Bytes in flight: a call is charged MaxRequestBytes before its request
// is read (gRPC reads a whole request before anyone sees it, and refuses
// a larger one unread), then what its request decoded to, plus the
// response a fetch may build; the charge is given back when the call
// ends. A call that finds the budget spent is refused at once with
// RESOURCE_EXHAUSTED (reason "busy"), never queued: memory stays under
// MaxInFlightBytes whatever the clients send.
type Budget struct {
	// MaxRequestBytes bounds one encoded request. Default: the largest
	// produce request the Limits allow, with its framing.
	MaxRequestBytes int
	// MaxInFlightBytes bounds the bytes of the calls in progress (see
	// above). Default 256 MiB.
	MaxInFlightBytes int64
	// MaxConnections bounds the client connections open at once; more are
	// closed as they arrive. Default 1024.
	MaxConnections int
	// MaxStreamsPerConnection bounds the calls in progress on one
	// connection. Default 128.
	MaxStreamsPerConnection uint32
	// HandshakeTimeout bounds a connection's TLS and HTTP/2 handshake.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that made no call for this long.
	// Default 5 min.
	IdleTimeout time.Duration
	// ProduceBytesPerSecond and FetchBytesPerSecond are every client's
	// quotas (by the name its certificate gives; all unnamed clients
	// share one), of record bytes produced and fetched. A client over its
	// quota is refused with RESOURCE_EXHAUSTED (reason "quota") and the
	// time until it is back within it. 0: no quota.
	ProduceBytesPerSecond int64
	FetchBytesPerSecond   int64
}

// DefaultBudget returns the defaults (MaxRequestBytes is derived from the
// node's Limits).
func DefaultBudget() Budget {
	return Budget{MaxInFlightBytes: 256 << 20, MaxConnections: 1024, MaxStreamsPerConnection: 128,
		HandshakeTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
}

// requestBytes is the largest encoded produce request within the limits:
// its records with their tags and length prefixes, and its other fields.
func (l *Limits) requestBytes() int {
	prefix := 1 + protowire.SizeVarint(uint64(l.MaxRecordBytes))
	return l.MaxProduceBytes + l.MaxProduceRecords*prefix + 3*(1+10)
}

// validate fills the defaults and checks the budget against the limits.
func (b *Budget) validate(l *Limits) error {
	d := DefaultBudget()
	if b.MaxRequestBytes == 0 {
		b.MaxRequestBytes = l.requestBytes()
	}
	if b.MaxInFlightBytes == 0 {
		b.MaxInFlightBytes = d.MaxInFlightBytes
	}
	if b.MaxConnections == 0 {
		b.MaxConnections = d.MaxConnections
	}
	if b.MaxStreamsPerConnection == 0 {
		b.MaxStreamsPerConnection = d.MaxStreamsPerConnection
	}
	if b.HandshakeTimeout == 0 {
		b.HandshakeTimeout = d.HandshakeTimeout
	}
	if b.IdleTimeout == 0 {
		b.IdleTimeout = d.IdleTimeout
	}
	switch {
	case b.MaxRequestBytes < 0 || b.MaxRequestBytes > math.MaxInt32 || b.MaxInFlightBytes < 0 || b.MaxConnections < 0 ||
		b.HandshakeTimeout < 0 || b.IdleTimeout < 0 || b.ProduceBytesPerSecond < 0 || b.FetchBytesPerSecond < 0:
		return fmt.Errorf("node: Budget: negative or out-of-range value")
	case b.MaxRequestBytes < l.requestBytes():
		return fmt.Errorf("node: Budget.MaxRequestBytes %d is below %d, the largest produce request the Limits allow",
			b.MaxRequestBytes, l.requestBytes())
	case b.MaxInFlightBytes < int64(b.MaxRequestBytes)+int64(l.MaxFetchResponseBytes):
		return fmt.Errorf("node: Budget.MaxInFlightBytes %d is below one largest request and one largest fetch response (%d)",
			b.MaxInFlightBytes, int64(b.MaxRequestBytes)+int64(l.MaxFetchResponseBytes))
	}
	return nil
}

// inFlight is the node-wide budget of bytes in flight.
type inFlight struct {
	max   int64
	used  atomic.Int64
	gauge prometheus.Gauge
}

// ticket is one call's charge against the in-flight budget.
type ticket struct {
	b    *inFlight
	mu   sync.Mutex
	held int64
	done bool
}

// take charges n bytes, nil if the budget cannot spare them.
func (b *inFlight) take(n int64) *ticket {
	if !b.reserve(n) {
		return nil
	}
	return &ticket{b: b, held: n}
}

func (b *inFlight) reserve(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	b.gauge.Add(float64(n))
	return true
}

func (b *inFlight) release(n int64) {
	b.used.Add(-n)
	b.gauge.Sub(float64(n))
}

// resize makes the ticket hold n bytes: it reports false, holding what it
// held, if the budget cannot spare the growth.
func (t *ticket) resize(n int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return true
	}
	switch d := n - t.held; {
	case d > 0:
		if !t.b.reserve(d) {
			return false
		}
	case d < 0:
		t.b.release(-d)
	}
	t.held = n
	return true
}

// close gives the charge back (once).
func (t *ticket) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.done {
		t.done = true
		t.b.release(t.held)
		t.held = 0
	}
}

// quotas are the clients' byte rates, one token bucket per client and
// direction.
type quotas struct {
	produce, fetch rate.Limit // bytes per second; 0: none
	mu             struct {
		sync.Mutex
		buckets map[string]*[2]*rate.Limiter // produce, fetch
	}
}

// maxQuotaClients bounds the buckets kept: past it they start over (a
// client gains at most one burst by it).
const maxQuotaClients = 10000

const (
	quotaProduce = 0
	quotaFetch   = 1
)

func (q *quotas) limiter(client string, dir int) *rate.Limiter {
	limit := q.produce
	if dir == quotaFetch {
		limit = q.fetch
	}
	if limit == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.mu.buckets == nil || len(q.mu.buckets) >= maxQuotaClients {
		q.mu.buckets = make(map[string]*[2]*rate.Limiter)
	}
	b := q.mu.buckets[client]
	if b == nil {
		// A burst of one second's worth: a client may take a second's
		// quota at once, and goes into debt by at most one request.
		b = &[2]*rate.Limiter{rate.NewLimiter(q.produce, max(int(q.produce), 1)), rate.NewLimiter(q.fetch, max(int(q.fetch), 1))}
		q.mu.buckets[client] = b
	}
	return b[dir]
}

// over reports how long a client must wait before its quota lets it call
// again (0: it may).
func (q *quotas) over(client string, dir int) time.Duration {
	l := q.limiter(client, dir)
	if l == nil {
		return 0
	}
	if tokens := l.Tokens(); tokens < 0 {
		return time.Duration(-tokens / float64(l.Limit()) * float64(time.Second))
	}
	return 0
}

// spend charges bytes to a client's quota; the bucket may go into debt,
// which its next calls wait out.
func (q *quotas) spend(client string, dir int, bytes int) {
	l := q.limiter(client, dir)
	if l == nil || bytes <= 0 {
		return
	}
	now := time.Now()
	for bytes > 0 { // ReserveN takes at most a burst at a time
		n := min(bytes, l.Burst())
		l.ReserveN(now, n)
		bytes -= n
	}
}

// callKey keys a call's state in its context.
type callKey struct{}

// call is what the tap learned of a call, for the interceptor.
type call struct {
	id     identity
	ticket *ticket
	stop   func() bool // disarms the release at the stream context's end
}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}
