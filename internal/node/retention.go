package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// Retention on a node.
//
// A partition's retention is replicated in its log (partition.Retention):
// CreatePartition and AlterPartition propose it to the partition's leader,
// wherever the call arrived. One sweep per node, every
// RetentionCheckInterval, walks the partitions this node leads and reads
// each one's head and segment index (no proposal, no wake-up: a quiesced
// partition stays asleep unless it has something to delete); for those
// whose retention asks the start offset to move, it proposes the trim.
// The sweep is the only timer: there is none per partition.

// retentionMetrics are the sweep's figures.
type retentionMetrics struct {
	sweeps, trims, failed prometheus.Counter
	duration              prometheus.Histogram
}

func newRetentionMetrics(reg prometheus.Registerer) *retentionMetrics {
	const ns, sub = "flotilla", "retention"
	m := &retentionMetrics{
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sweeps_total",
			Help: "Retention sweeps over the partitions this node leads."}),
		trims: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "trims_total",
			Help: "Log start offsets moved by retention (trims proposed and applied)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "trims_failed_total",
			Help: "Trims the sweep proposed that failed (retried at the next sweep)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "sweep_duration_seconds",
			Help: "Time one retention sweep took.", Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10)}),
	}
	reg.MustRegister(m.sweeps, m.trims, m.failed, m.duration)
	return m
}

// runRetention sweeps every interval until ctx ends (which also ends a
// sweep in progress).
func (n *Node) runRetention(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sctx, cancel := context.WithTimeout(ctx, interval)
			n.SweepRetention(sctx)
			cancel()
		}
	}
}

// SweepRetention runs one retention sweep now (the node runs one every
// RetentionCheckInterval): for each partition this node leads whose
// retention asks its start offset to move, it proposes the trim. It
// returns how many partitions it trimmed.
func (n *Node) SweepRetention(ctx context.Context) int {
	start := time.Now()
	defer func() {
		n.rm.sweeps.Inc()
		n.rm.duration.Observe(time.Since(start).Seconds())
	}()
	n.mu.Lock()
	ids := make([]uint64, 0, len(n.mu.logs))
	for id := range n.mu.logs {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	slices.Sort(ids)
	nowMs := uint64(time.Now().UnixMilli())
	trimmed := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		st, err := n.host.Status(multiraft.GroupID(id))
		if err != nil || st.Role != multiraft.RoleLeader || !st.Serving {
			continue
		}
		l := n.partitionLog(id)
		if l == nil {
			continue
		}
		to, trim, err := l.RetentionTarget(nowMs)
		if err != nil {
			n.log.Warn("retention: reading the partition's segments", "partition", id, "err", err)
			continue
		}
		if !trim {
			continue
		}
		if _, err := n.host.Propose(ctx, multiraft.GroupID(id), partition.MarshalTrim(to)); err != nil {
			n.rm.failed.Inc()
			n.log.Debug("retention: trim failed, retried at the next sweep", "partition", id, "start", to, "err", err)
			continue
		}
		n.rm.trims.Inc()
		trimmed++
	}
	return trimmed
}

// maxRetentionMs is the longest retention or segment age taken: a
// time.Duration's range. (A retention of 0 keeps records for ever.)
const maxRetentionMs = uint64(math.MaxInt64 / int64(time.Millisecond))

// checkRetention refuses a retention a partition cannot take.
func checkRetention(r *clientpb.Retention) error {
	if r.GetRetentionMs() > maxRetentionMs || r.GetSegmentMs() > maxRetentionMs {
		return status.Errorf(codes.InvalidArgument, "retention_ms and segment_ms are at most %d (0: no limit by age)", maxRetentionMs)
	}
	return nil
}

// retentionOf converts the client API's retention (checkRetention passed).
func retentionOf(r *clientpb.Retention) partition.Retention {
	return partition.Retention{Bytes: r.GetRetentionBytes(), Age: time.Duration(r.GetRetentionMs()) * time.Millisecond,
		SegmentBytes: r.GetSegmentBytes(), SegmentAge: time.Duration(r.GetSegmentMs()) * time.Millisecond}
}

func retentionPB(r partition.Retention) *clientpb.Retention {
	return &clientpb.Retention{RetentionBytes: r.Bytes, RetentionMs: uint64(r.Age / time.Millisecond),
		SegmentBytes: r.SegmentBytes, SegmentMs: uint64(r.SegmentAge / time.Millisecond)}
}

// errNoPartition: no node asked hosts the partition.
var errNoPartition = errors.New("node: no replica of the partition found")

// configure replicates a partition's retention: it proposes it to the
// partition's leader, found among the given replica nodes (asking each in
// turn until one leads; a new partition may not have a leader yet), and
// retries until ctx ends, or until every node said it hosts no such
// partition (errNoPartition). The command sets the retention whole, so a
// retry applied twice does no harm.
func (n *Node) configure(ctx context.Context, id uint64, replicas []uint64, r partition.Retention) error {
	cmd := partition.MarshalConfigure(r)
	var last error
	for {
		order := slices.Clone(replicas)
		if st, err := n.host.Status(multiraft.GroupID(id)); err == nil && st.Leader != 0 {
			order = append([]uint64{uint64(st.Leader)}, order...) // the leader as known here first
		}
		missing := 0
		for _, node := range order {
			res, err := n.host.ProposeOn(ctx, multiraft.NodeID(node), multiraft.GroupID(id), cmd)
			if err == nil {
				if r, derr := partition.DecodeResult(res); derr != nil || r.Err != nil {
					return fmt.Errorf("partition %d refused its retention: %v", id, errors.Join(derr, r.Err))
				}
				return nil
			}
			// A peer's refusal arrives as text (multiraft's ErrPeer).
			if errors.Is(err, multiraft.ErrGroupNotFound) || strings.Contains(err.Error(), multiraft.ErrGroupNotFound.Error()) {
				missing++
			}
			last = err
		}
		if missing == len(order) {
			return fmt.Errorf("%w: partition %d (last: %w)", errNoPartition, id, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
