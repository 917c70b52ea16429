package store

import (
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Append queues entries and a hard state (either may be empty) for the log
// writer. done runs once they are durable, after every earlier item of this
// group; from then on the storage shows them. done never runs if the store
// fails first. done runs on the log writer's goroutine: it must be quick
// and must not block (hand the work to another goroutine). Entries must be contiguous and must not leave a gap after the
// log (appending at or below the last index overwrites the tail). The
// entries and the hard state must not be mutated afterwards.
//
// Append returns ErrBusy, queueing nothing, when the writer's queue is full.
func (g *GroupStorage) Append(entries []*pb.Entry, hs *pb.HardState, done func()) error {
	if len(entries) == 0 && hs == nil {
		return fmt.Errorf("%w: empty append", ErrInvalid)
	}
	if err := g.s.usable(); err != nil {
		return err
	}
	var bytes int64 = 64
	for i, e := range entries {
		if i > 0 && e.GetIndex() != entries[i-1].GetIndex()+1 {
			return fmt.Errorf("%w: group %d: entries not contiguous at %d after %d", ErrInvalid, g.id, e.GetIndex(), entries[i-1].GetIndex())
		}
		bytes += int64(len(e.Data)) + entryOverhead
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.acceptingLocked(); err != nil {
		return err
	}
	if len(entries) > 0 {
		first := entries[0].GetIndex()
		if first <= g.mu.trunc.index || first > g.mu.queuedLast+1 {
			return fmt.Errorf("%w: group %d: append at %d, log is (%d, %d]", ErrInvalid, g.id, first, g.mu.trunc.index, g.mu.queuedLast)
		}
	}
	it := &writeItem{kind: itemAppend, g: g, done: done, bytes: bytes, entries: entries, hardState: hs}
	if err := g.s.w.enqueue(it); err != nil {
		return err
	}
	if len(entries) > 0 {
		g.mu.queuedLast = entries[len(entries)-1].GetIndex()
	}
	return nil
}

// Truncate queues the removal of every entry up to and including index.
// index must be durable (at most LastIndex) and applied. Truncation keeps
// (index, term of index) so Term(index) still answers. done runs once the
// truncation is durable. A truncation at or below the current truncation
// point does nothing.
func (g *GroupStorage) Truncate(index uint64, done func()) error {
	if err := g.s.usable(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.acceptingLocked(); err != nil {
		return err
	}
	if index > g.mu.last || index > g.mu.applied.Index {
		return fmt.Errorf("%w: group %d: truncate to %d beyond last %d or applied %d",
			ErrInvalid, g.id, index, g.mu.last, g.mu.applied.Index)
	}
	return g.s.w.enqueue(&writeItem{kind: itemTruncate, g: g, done: done, bytes: 64, index: index})
}

func (g *GroupStorage) acceptingLocked() error {
	switch {
	case g.mu.removing:
		return fmt.Errorf("%w: group %d", ErrGroupRemoved, g.id)
	case g.mu.installing:
		return fmt.Errorf("%w: group %d is installing a snapshot", ErrInvalid, g.id)
	}
	return nil
}

func (g *GroupStorage) isRemoving() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mu.removing
}

// Flush queues done to run once everything queued for the group before it
// is durable, without writing anything itself. Like Append, it returns
// ErrBusy when the writer's queue is full.
func (g *GroupStorage) Flush(done func()) error {
	if err := g.s.usable(); err != nil {
		return err
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if err := g.acceptingLocked(); err != nil {
		return err
	}
	return g.s.w.enqueue(&writeItem{kind: itemBarrier, g: g, done: done})
}

// barrier waits until every item of the group queued so far is durable.
func (g *GroupStorage) barrier() error {
	ch := make(chan struct{})
	if err := g.s.w.enqueue(&writeItem{kind: itemBarrier, g: g, done: func() { close(ch) }}); err != nil {
		return err
	}
	return g.s.wait(ch)
}

// wait blocks until ch closes or the store fails.
func (s *Store) wait(ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-s.failure.ch:
		return s.Err()
	}
}
