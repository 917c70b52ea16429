package transport

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/flotilla-io/flotilla/metrics"
)

// Config holds what every transport shares: queue and frame bounds,
// heartbeat coalescing, reconnection and snapshot limits. The zero value
// of a field means its default (see DefaultConfig).
type Config struct {
	// MaxQueueMessages and MaxQueueBytes bound each peer's send queue;
	// what does not fit is dropped and reported unreachable.
	MaxQueueMessages int
	MaxQueueBytes    int
	// MaxQueueControl bounds each peer's control lane: heartbeats and
	// their responses, votes, pre-votes and timeout-now, queued apart from
	// the other messages and sent ahead of them. A queue full of appends
	// under overload must neither drop nor delay them (a starved failure
	// detector elects, and an overloaded cluster that elects gets slower
	// still). A heartbeat is a 14-byte record on the wire.
	MaxQueueControl int
	// MaxFrameMessages and MaxFrameBytes bound one frame (one batch on
	// the wire); a single larger message still goes, alone. Coalesced
	// heartbeat records count toward MaxFrameBytes only, so an idle host
	// sends one frame per peer per flush at any number of groups.
	MaxFrameMessages int
	MaxFrameBytes    int
	// MaxBackoff caps the wait between reconnection attempts to a peer
	// (exponential from about 20 ms, with jitter). While a peer is down,
	// messages to it are dropped at once and reported unreachable.
	MaxBackoff time.Duration
	// SnapshotChunkBytes is the size of a snapshot stream's chunks.
	SnapshotChunkBytes int
	// SnapshotRateBytes throttles the snapshot data a host sends, in bytes
	// per second, over all its snapshot streams. Negative: unlimited.
	SnapshotRateBytes int64
	// MaxSnapshotSends and MaxSnapshotRecvs bound the snapshot streams in
	// flight per host in each direction; over the bound a send fails at
	// once (raft retries later).
	MaxSnapshotSends int
	MaxSnapshotRecvs int
	// Filters, if set, decide the fate of every inbound message and
	// snapshot: fault injection for tests.
	Filters *Filters
	// Metrics receives the figures. Default: a set of the transport's own,
	// registered at Start where the host's Env says (a multiraft host:
	// its Config.Registerer), unregistered at Close.
	Metrics *metrics.Transport
	// Logger receives connection events. Default: the host's logger from
	// Start on (discarded before).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxQueueMessages:   10000,
		MaxQueueBytes:      64 << 20,
		MaxQueueControl:    1 << 17,
		MaxFrameMessages:   4096,
		MaxFrameBytes:      4 << 20,
		MaxBackoff:         time.Second,
		SnapshotChunkBytes: 1 << 20,
		SnapshotRateBytes:  256 << 20,
		MaxSnapshotSends:   4,
		MaxSnapshotRecvs:   4,
	}
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	fill := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&c.MaxQueueMessages, d.MaxQueueMessages)
	fill(&c.MaxQueueBytes, d.MaxQueueBytes)
	fill(&c.MaxQueueControl, d.MaxQueueControl)
	fill(&c.MaxFrameMessages, d.MaxFrameMessages)
	fill(&c.MaxFrameBytes, d.MaxFrameBytes)
	fill(&c.SnapshotChunkBytes, d.SnapshotChunkBytes)
	fill(&c.MaxSnapshotSends, d.MaxSnapshotSends)
	fill(&c.MaxSnapshotRecvs, d.MaxSnapshotRecvs)
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.SnapshotRateBytes == 0 {
		c.SnapshotRateBytes = d.SnapshotRateBytes
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewTransport()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MaxQueueMessages < 0, c.MaxQueueBytes < 0, c.MaxQueueControl < 0, c.MaxFrameMessages < 0, c.MaxFrameBytes < 0,
		c.SnapshotChunkBytes < 0, c.MaxSnapshotSends < 0, c.MaxSnapshotRecvs < 0:
		return fmt.Errorf("%w: negative bound", ErrInvalidConfig)
	case c.MaxBackoff < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	}
	return nil
}
