package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// catchup-1g: how a new replica catches up with a large partition.
//
// Three node processes fill one partition with CatchupBytes of records and
// an eighth more, under a retention of CatchupBytes in segments of a
// sixteenth of it: the leader trims the oldest segments and truncates its
// Raft log, so a replica that starts from nothing is behind the leader's
// log and gets a snapshot carrying the retained gigabyte (the records
// stay in the Raft log; see partition). A fourth node process then starts,
// empty, and the partition adds a replica there. The run reports the
// time from the add to the new replica serving every record, the bytes it
// holds per second of that, and its process's peak RSS above what it used
// before the add (the bar: under 256 MiB whatever the partition's size).

// CatchupBytes is catchup-1g's partition size (a sixteenth with --quick).
const CatchupBytes = 1 << 30

// catchupRecord is the size of one record, and catchupBatch how many go
// in a produce request (1 MiB).
const (
	catchupRecord = 64 << 10
	catchupBatch  = 16
)

func runCatchup(ctx context.Context, root string, cfg Config, r *Report) error {
	if !cfg.Procs {
		return errors.New("bench: catchup-1g measures the receiving node process: run it with --procs")
	}
	size := int64(CatchupBytes)
	if cfg.Quick {
		size /= 16
	}
	c, err := startProcsN(ctx, root, cfg.Binary, 4, 3, "--retention-check-interval", "1s")
	if err != nil {
		return err
	}
	defer c.close()
	const id = 1
	ret := &clientpb.Retention{RetentionBytes: uint64(size), SegmentBytes: uint64(size / 16)}
	if _, err := c.clients[0].CreatePartition(ctx, &clientpb.CreatePartitionRequest{PartitionId: id, ReplicaNodeIds: []uint64{1, 2, 3}, Retention: ret}); err != nil {
		return fmt.Errorf("bench: create the partition: %w", err)
	}

	// Fill: four producers, 1 MiB requests, to the leader.
	fill := size + size/8
	fmt.Fprintf(cfg.Progress, "catchup: filling %d MiB\n", fill>>20)
	start := time.Now()
	fillCtx, cancel := context.WithTimeout(ctx, 20*time.Minute) // a stuck cluster ends the run
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	recs := make([][]byte, catchupBatch)
	for i := range recs {
		recs[i] = make([]byte, catchupRecord)
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(catchupRecord*catchupBatch) <= fill {
				if err := c.produce(fillCtx, id, recs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "catchup: filled in %.1fs\n", time.Since(start).Seconds())

	// Wait for the leader's retention to trim, so its log no longer
	// starts at the beginning.
	var info *clientpb.PartitionInfo
	if err := waitUntil(ctx, 2*time.Minute, func() bool {
		info = c.describeLeader(ctx, id)
		return info != nil && info.GetLogStartOffset() > 0
	}); err != nil {
		return fmt.Errorf("bench: the leader's retention never trimmed: %w", err)
	}
	hw := info.GetHighWatermark()

	// The fourth node, empty; its RSS before the add is the baseline.
	if err := c.startNode(ctx, 3); err != nil {
		return err
	}
	pid := c.proc(3).cmd.Process.Pid
	base := procStatus(pid, "VmRSS:")
	_ = writeClearRefs(pid)
	t0 := time.Now()
	if err := c.changeReplicas(ctx, id, []uint64{4}); err != nil {
		return err
	}
	var got *clientpb.PartitionInfo
	if err := waitUntil(ctx, 10*time.Minute, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got, err = c.clients[3].DescribePartition(cctx, &clientpb.DescribePartitionRequest{PartitionId: id})
		return err == nil && got.GetHighWatermark() >= hw
	}); err != nil {
		return fmt.Errorf("bench: node 4 did not catch up: %w", err)
	}
	secs := time.Since(t0).Seconds()
	r.Groups, r.Payload, r.Proposers = 1, catchupRecord, 0
	r.CatchupSeconds = secs
	r.CatchupBytes = int64(got.GetSizeBytes())
	r.CatchupBytesPerSec = float64(got.GetSizeBytes()) / secs
	r.ReceiverRSSGrowth = procStatus(pid, "VmHWM:") - base
	if v, ok := c.metrics(3, []string{"flotilla_store_snapshots_installed_total"}); ok {
		r.CatchupSnapshots = v[0]
	}
	return nil
}

// produce sends one produce request to the partition's leader, following
// redirects and retrying refusals.
func (c *procCluster) produce(ctx context.Context, id uint64, recs [][]byte) error {
	node := uint64(1)
	for {
		_, err := c.clients[node-1].Produce(ctx, &clientpb.ProduceRequest{PartitionId: id, Records: recs})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if l := c.knownLeader(id); l != 0 {
			node = l
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// describeLeader describes the partition on its leader, nil if none.
func (c *procCluster) describeLeader(ctx context.Context, id uint64) *clientpb.PartitionInfo {
	l := c.knownLeader(id)
	if l == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := c.clients[l-1].DescribePartition(cctx, &clientpb.DescribePartitionRequest{PartitionId: id})
	if err != nil || info.GetRole() != "leader" {
		return nil
	}
	return info
}

// changeReplicas adds replicas through the partition's leader.
func (c *procCluster) changeReplicas(ctx context.Context, id uint64, add []uint64) error {
	return waitUntil(ctx, time.Minute, func() bool {
		l := c.knownLeader(id)
		if l == 0 {
			return false
		}
		_, err := c.clients[l-1].ChangeReplicas(ctx, &clientpb.ChangeReplicasRequest{PartitionId: id, AddNodeIds: add})
		if err == nil {
			return true
		}
		// A call that timed out may have done it.
		info := c.describeLeader(ctx, id)
		return info != nil && slices.Contains(info.GetReplicaNodeIds(), add[0])
	})
}

// waitUntil polls cond every 100 ms until it holds, ctx ends or timeout
// passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// writeClearRefs starts a new peak RSS measurement of a process.
func writeClearRefs(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}
