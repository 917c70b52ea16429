// Package storeload drives a store's log writer the way a host full of busy
// groups would: one closed-loop appender per group, each appending an entry
// and waiting for its completion before the next. The store benchmarks and
// `flotilla storebench` share it.
package storeload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/store"
)

// Config shapes the load.
type Config struct {
	Groups   int // groups appending concurrently
	Payload  int // bytes per entry
	Entries  int // entries per append
	FirstID  uint64
	MaxTotal int64 // stop after this many appends in all (0: until the context ends)
}

// Result is what one run measured.
type Result struct {
	Appends, Entries int64
	Syncs            int64 // log writer batches, each one WAL sync
	Busy             int64 // appends refused with ErrBusy and retried
	Elapsed          time.Duration
	P50, P99, P999   time.Duration
}

// EntriesPerSync is how many entries one fsync carried on average.
func (r Result) EntriesPerSync() float64 { return ratio(r.Entries, r.Syncs) }

// SyncsPerSecond is the WAL syncs per second.
func (r Result) SyncsPerSecond() float64 { return float64(r.Syncs) / r.Elapsed.Seconds() }

// EntriesPerSecond is the durable entries per second.
func (r Result) EntriesPerSecond() float64 { return float64(r.Entries) / r.Elapsed.Seconds() }

func (r Result) String() string {
	return fmt.Sprintf("%d entries in %s: %.0f entries/s, %.0f syncs/s, %.1f entries/sync, append latency p50 %s p99 %s p99.9 %s, busy %d",
		r.Entries, r.Elapsed.Round(time.Millisecond), r.EntriesPerSecond(), r.SyncsPerSecond(), r.EntriesPerSync(),
		r.P50, r.P99, r.P999, r.Busy)
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// CreateGroups creates cfg.Groups founding groups (single voter) with IDs
// from cfg.FirstID, concurrently so creations share syncs.
func CreateGroups(s *store.Store, cfg Config) ([]*store.GroupStorage, error) {
	groups := make([]*store.GroupStorage, cfg.Groups)
	errs := make(chan error, cfg.Groups)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for i := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g, err := s.CreateGroup(cfg.FirstID+uint64(i), 1, map[uint64]uint64{1: 1})
			if err != nil {
				errs <- err
				return
			}
			groups[i] = g
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return groups, nil
}

// Run appends to every group until ctx ends or cfg.MaxTotal appends are done.
func Run(ctx context.Context, s *store.Store, batches func() float64, groups []*store.GroupStorage, cfg Config) (Result, error) {
	var (
		total, busy atomic.Int64
		completed   atomic.Int64
		wg          sync.WaitGroup
		mu          sync.Mutex
		lat         []time.Duration
		firstErr    error
	)
	payload := make([]byte, cfg.Payload)
	entries := max(cfg.Entries, 1)
	syncsBefore := batches()
	start := time.Now()
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next, _ := g.LastIndex()
			next++
			term := g.HardState().GetTerm()
			done := make(chan struct{}, 1)
			var local []time.Duration
			for ctx.Err() == nil && (cfg.MaxTotal == 0 || total.Add(1) <= cfg.MaxTotal) {
				es := make([]*pb.Entry, entries)
				for i := range es {
					es[i] = &pb.Entry{Index: new(next + uint64(i)), Term: new(term), Data: payload}
				}
				t0 := time.Now()
				err := g.Append(es, nil, func() { done <- struct{}{} })
				for err != nil && ctx.Err() == nil {
					if !isBusy(err) {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					busy.Add(1)
					time.Sleep(100 * time.Microsecond)
					err = g.Append(es, nil, func() { done <- struct{}{} })
				}
				if err != nil {
					break
				}
				select {
				case <-done:
				case <-s.Failed():
					mu.Lock()
					firstErr = s.Err()
					mu.Unlock()
					return
				}
				completed.Add(1)
				if len(local) < 1<<16 {
					local = append(local, time.Since(t0))
				}
				next += uint64(entries)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := Result{Elapsed: time.Since(start), Busy: busy.Load(), Syncs: int64(batches() - syncsBefore)}
	r.Appends = completed.Load()
	r.Entries = r.Appends * int64(entries)
	slices.Sort(lat)
	r.P50, r.P99, r.P999 = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 0.999)
	return r, firstErr
}

// WriterBatches returns a function reading the store's batch counter.
func WriterBatches(cfg store.Config) func() float64 {
	return func() float64 { return testutil.ToFloat64(cfg.Metrics.WriterBatches) }
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func isBusy(err error) bool { return errors.Is(err, store.ErrBusy) }

// WriterEntries returns a function reading the store's entry counter.
func WriterEntries(cfg store.Config) func() float64 {
	return func() float64 { return testutil.ToFloat64(cfg.Metrics.WriterEntries) }
}
