package store

import (
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
)

// The log writer is the store's synced write path, shared by every group.
//
// Callers queue items (appends with their hard state, truncations, group
// creations and removals) from any goroutine. One goroutine, the batcher,
// takes everything that is waiting (up to MaxBatchItems and MaxBatchBytes),
// writes it into ONE Pebble batch and applies it without waiting for the
// sync; a second goroutine, the syncer, waits for that batch's WAL sync and
// only then publishes the new log bounds and runs each item's completion,
// in queue order (so per group in FIFO order). While batch N syncs, the
// batcher already builds and applies batch N+1, so under load a batch grows
// by itself to whatever arrived during one sync, and with an empty queue an
// item is written at once: there is no timer anywhere.
//
// If a write or a sync fails the store fails, and no completion runs for the
// failed batch or any later one.

type itemKind uint8

const (
	itemAppend itemKind = iota
	itemTruncate
	itemCreate
	itemRemove
	itemBarrier
)

type writeItem struct {
	kind  itemKind
	g     *GroupStorage
	done  func()
	bytes int64

	entries   []*pb.Entry   // itemAppend
	hardState *pb.HardState // itemAppend, itemCreate (nil: unchanged)
	index     uint64        // itemTruncate: truncate up to and including
	replicaID uint64        // itemCreate: replica ID; itemRemove: next allowed replica ID
	boot      *bootState    // itemCreate of a founding replica

	newLast uint64 // itemAppend: last index after this item, set by the batcher
}

type logWriter struct {
	s    *Store
	wake chan struct{} // capacity 1: "the queue is not empty"

	mu struct {
		sync.Mutex
		queue  []*writeItem
		spare  []*writeItem
		bytes  int64
		closed bool
	}

	synced chan *syncJob // batcher -> syncer
	done   sync.WaitGroup
}

type syncJob struct {
	batch   *pebble.Batch
	items   []*writeItem
	entries int
	applied time.Time
}

func newLogWriter(s *Store) *logWriter {
	w := &logWriter{s: s, wake: make(chan struct{}, 1), synced: make(chan *syncJob, 1)}
	w.done.Add(2)
	go w.batchLoop()
	go w.syncLoop()
	return w
}

// enqueue queues an item, or refuses it with ErrBusy when the queue is over
// its bounds (an item alone in the queue is always taken). Removals are
// never refused: there is at most one per group, they free space rather
// than take it, and a replica that applied its own removal has nowhere
// else to go.
func (w *logWriter) enqueue(it *writeItem) error {
	m := w.s.m
	w.mu.Lock()
	if w.mu.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if n, bytes := len(w.mu.queue), w.mu.bytes; n > 0 && it.kind != itemRemove && (n >= w.s.cfg.MaxQueueItems || bytes+it.bytes > w.s.cfg.MaxQueueBytes) {
		w.mu.Unlock()
		m.WriterRejected.Inc()
		return fmt.Errorf("%w: %d items, %d bytes queued", ErrBusy, n, bytes)
	}
	w.mu.queue = append(w.mu.queue, it)
	w.mu.bytes += it.bytes
	w.mu.Unlock()
	m.WriterQueueItems.Inc()
	m.WriterQueueBytes.Add(float64(it.bytes))
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// take waits for items and returns the next batch's worth, or nil once the
// writer is closed and drained.
func (w *logWriter) take() []*writeItem {
	for {
		w.mu.Lock()
		if len(w.mu.queue) > 0 {
			n, bytes := 0, int64(0)
			for n < len(w.mu.queue) && n < w.s.cfg.MaxBatchItems {
				b := w.mu.queue[n].bytes
				if n > 0 && bytes+b > int64(w.s.cfg.MaxBatchBytes) {
					break
				}
				bytes += b
				n++
			}
			var items []*writeItem
			if n == len(w.mu.queue) {
				items = w.mu.queue
				w.mu.queue = w.mu.spare[:0]
			} else {
				items = append(w.mu.spare[:0], w.mu.queue[:n]...)
				w.mu.queue = append(w.mu.queue[:0], w.mu.queue[n:]...)
			}
			w.mu.spare = nil
			w.mu.bytes -= bytes
			w.mu.Unlock()
			w.s.m.WriterQueueItems.Sub(float64(n))
			w.s.m.WriterQueueBytes.Sub(float64(bytes))
			return items
		}
		closed := w.mu.closed
		w.mu.Unlock()
		if closed {
			return nil
		}
		<-w.wake
	}
}

// recycle hands a drained item slice back for reuse by the queue.
func (w *logWriter) recycle(items []*writeItem) {
	clear(items)
	w.mu.Lock()
	if w.mu.spare == nil {
		w.mu.spare = items[:0]
	}
	w.mu.Unlock()
}

func (w *logWriter) batchLoop() {
	defer w.done.Done()
	defer close(w.synced)
	for {
		items := w.take()
		if items == nil {
			return
		}
		if w.s.Err() != nil {
			continue // fail-stop: nothing more is written, nothing completes
		}
		job, err := w.write(items)
		if err != nil {
			w.s.fail(err)
			continue
		}
		w.synced <- job
	}
}

// write builds one batch from items and applies it without waiting for the
// sync. Entries and cache changes that readers could see are unpublished
// before the batch is applied, and the cache gains the new entries after.
func (w *logWriter) write(items []*writeItem) (job *syncJob, err error) {
	defer w.s.recoverFatal(&err)
	b := w.s.db.NewBatch()
	job = &syncJob{batch: b, items: items}
	var key []byte
	for _, it := range items {
		g := it.g
		switch it.kind {
		case itemAppend:
			key, err = w.writeAppend(b, key, it)
			job.entries += len(it.entries)
		case itemTruncate:
			err = w.writeTruncate(b, it)
		case itemCreate:
			err = writeCreate(b, it)
		case itemRemove:
			g.mu.Lock()
			g.mu.gen++
			g.mu.first, g.mu.last = g.mu.trunc.index+1, g.mu.trunc.index
			g.mu.Unlock()
			w.s.cache.drop(g.id)
			start, end := replicaSpan(g.id)
			err = firstErr(b.DeleteRange(start, end, nil),
				b.Delete(replicaIDKey(g.id), nil),
				b.Set(tombstoneKey(g.id), encodeUint64(it.replicaID), nil))
		}
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("log writer: build batch: %w", err)
		}
	}
	if err := w.s.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return nil, fmt.Errorf("log writer: apply: %w", err)
	}
	job.applied = time.Now()
	for _, it := range items {
		if it.kind == itemAppend && !it.g.isRemoving() {
			w.s.cache.add(it.g.id, it.entries)
		}
	}
	return job, nil
}

func (w *logWriter) writeAppend(b *pebble.Batch, key []byte, it *writeItem) ([]byte, error) {
	g := it.g
	g.mu.Lock()
	oldLast := g.mu.pebbleLast
	if len(it.entries) == 0 {
		it.newLast = oldLast // a hard state alone
		g.mu.Unlock()
		return key, w.writeHardState(b, it)
	}
	first := it.entries[0].GetIndex()
	it.newLast = first + uint64(len(it.entries)) - 1
	if first <= oldLast {
		// A tail overwrite: hide the replaced entries from readers before
		// Pebble changes, and drop them from the cache.
		g.mu.gen++
		g.mu.last = min(g.mu.last, first-1)
		w.s.cache.truncateFrom(g.id, first)
	}
	g.mu.pebbleLast = it.newLast
	g.mu.Unlock()

	for _, e := range it.entries {
		key = appendLogKey(key[:0], g.id, e.GetIndex())
		// Encode straight into the batch: the payload is copied once.
		op := b.SetDeferred(len(key), encodedEntrySize(e))
		copy(op.Key, key)
		appendEntryValue(op.Value[:0], e)
		if err := op.Finish(); err != nil {
			return key, err
		}
	}
	if it.newLast < oldLast {
		if err := deleteLogRange(b, g.id, it.newLast+1, oldLast+1); err != nil {
			return key, err
		}
	}
	return key, w.writeHardState(b, it)
}

func (w *logWriter) writeHardState(b *pebble.Batch, it *writeItem) error {
	if it.hardState == nil {
		return nil
	}
	v, err := encodeHardState(it.hardState)
	if err != nil {
		return err
	}
	return b.Set(hardStateKey(it.g.id), v, nil)
}

func (w *logWriter) writeTruncate(b *pebble.Batch, it *writeItem) error {
	g := it.g
	g.mu.RLock()
	old := g.mu.trunc
	// Entries above the published last index may be on their way to being
	// overwritten by an append queued since the truncation was: never
	// truncate past it (truncating less is always safe).
	index := min(it.index, g.mu.last)
	g.mu.RUnlock()
	if index <= old.index {
		// An install or an earlier truncation got there first; entries
		// kept below it for the state machine (a snapshot brought them)
		// go up to index.
		g.mu.Lock()
		kept := g.mu.kept
		if kept <= index {
			g.mu.kept = index + 1
		}
		g.mu.Unlock()
		if kept > index {
			return nil
		}
		w.s.m.Truncations.Inc()
		return deleteLogRange(b, g.id, kept, index+1)
	}
	term, err := g.Term(index)
	if err != nil {
		return fmt.Errorf("term of truncation point %d: %w", index, err)
	}
	trunc := truncatedState{index: index, term: term}
	// Publish the new first index before anything is deleted, so a reader
	// that meets the gap answers ErrCompacted.
	g.mu.Lock()
	g.mu.gen++
	g.mu.trunc = trunc
	g.mu.first = trunc.index + 1
	g.mu.last = max(g.mu.last, trunc.index)
	kept := min(g.mu.kept, old.index+1) // entries kept below the old truncation go too
	g.mu.kept = trunc.index + 1
	g.mu.Unlock()
	w.s.cache.truncateBelow(g.id, trunc.index+1)
	w.s.m.Truncations.Inc()
	return firstErr(b.Set(truncatedKey(g.id), trunc.encode(), nil),
		deleteLogRange(b, g.id, kept, trunc.index+1))
}

// deleteLogRange deletes log entries [lo, hi): point tombstones for a few,
// a range tombstone for many.
func deleteLogRange(b *pebble.Batch, groupID, lo, hi uint64) error {
	const pointDeleteLimit = 64
	if hi-lo > pointDeleteLimit {
		return b.DeleteRange(logKey(groupID, lo), logKey(groupID, hi), nil)
	}
	key := make([]byte, 0, logKeyLen)
	for i := lo; i < hi; i++ {
		key = appendLogKey(key[:0], groupID, i)
		if err := b.Delete(key, nil); err != nil {
			return err
		}
	}
	return nil
}

func writeCreate(b *pebble.Batch, it *writeItem) error {
	id := it.g.id
	if err := b.Set(replicaIDKey(id), encodeUint64(it.replicaID), nil); err != nil || it.boot == nil {
		return err
	}
	hs, err := encodeHardState(it.boot.hardState)
	if err != nil {
		return err
	}
	applied, err := it.boot.applied.encode()
	if err != nil {
		return err
	}
	return firstErr(b.Set(hardStateKey(id), hs, nil),
		b.Set(truncatedKey(id), it.boot.trunc.encode(), nil),
		b.Set(appliedKey(id), applied, nil))
}

func (w *logWriter) syncLoop() {
	defer w.done.Done()
	for job := range w.synced {
		if w.s.Err() != nil {
			w.abandon(job)
			continue
		}
		if err := job.batch.SyncWait(); err != nil {
			w.s.fail(fmt.Errorf("log writer: sync: %w", err))
			w.abandon(job)
			continue
		}
		if w.s.Err() != nil {
			// The store failed while this batch synced (a disk stall, say):
			// once failed, nothing more completes.
			_ = job.batch.Close()
			continue
		}
		w.record(job)
		for _, it := range job.items {
			w.publish(it)
			if it.done != nil {
				it.done()
			}
		}
		_ = job.batch.Close()
		w.recycle(job.items)
	}
}

// abandon releases a batch whose sync failed or was never awaited; its
// completions never run.
func (w *logWriter) abandon(job *syncJob) {
	_ = job.batch.SyncWait() // Pebble requires it before Close
	_ = job.batch.Close()
}

func (w *logWriter) record(job *syncJob) {
	m := w.s.m
	m.SyncDuration.Observe(time.Since(job.applied).Seconds())
	m.WriterBatches.Inc()
	m.WriterItems.Add(float64(len(job.items)))
	m.WriterEntries.Add(float64(job.entries))
	m.WriterBytes.Add(float64(job.batch.Len()))
	m.WriterItemsPerBatch.Observe(float64(len(job.items)))
	m.WriterBytesPerBatch.Observe(float64(job.batch.Len()))
}

// publish makes a synced item visible: new log bounds, hard state, group
// registration changes.
func (w *logWriter) publish(it *writeItem) {
	g := it.g
	switch it.kind {
	case itemAppend:
		g.mu.Lock()
		// A later batch may already have shortened the log (an overwrite):
		// never publish past what Pebble holds.
		g.mu.last = max(min(it.newLast, g.mu.pebbleLast), g.mu.trunc.index)
		if it.hardState != nil {
			g.mu.hardState = it.hardState
		}
		g.mu.Unlock()
	case itemRemove:
		w.s.groups.Lock()
		if w.s.groups.m[g.id] == g {
			delete(w.s.groups.m, g.id)
		}
		w.s.groups.Unlock()
	}
}

// close stops taking items, lets the writer commit what is queued, and
// waits for both goroutines to exit.
func (w *logWriter) close() {
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	w.done.Wait()
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
