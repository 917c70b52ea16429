package store

import (
	"fmt"
	"maps"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// GroupStorage is one group's view of the store: its raft.Storage, its
// append and truncation entry points to the log writer, its apply batches
// and its snapshot install.
//
// Reads (the raft.Storage methods) are safe from any goroutine, concurrently
// with the log writer, truncation and snapshot install. Writes of one group
// (Append, Truncate, apply batches, InstallSnapshot, removal) must be issued
// by one owner at a time, in order: the host's worker that owns the group.
type GroupStorage struct {
	s  *Store
	id uint64

	mu struct {
		sync.RWMutex
		replicaID uint64
		// gen changes whenever entries may disappear or change under a
		// reader (tail overwrite, truncation, snapshot install, removal).
		// A reader that saw gen change while reading retries.
		gen uint64
		// first and last bound the entries raft may read; published by the
		// log writer once the entries are durable. Entries that are about to
		// be overwritten or deleted are unpublished before Pebble changes.
		first, last uint64
		// kept is the lowest log index Pebble may hold: below first when
		// entries raft no longer reads are kept for the state machine
		// (ReadLog; a snapshot brings them), first otherwise. Truncation
		// deletes from it.
		kept      uint64
		trunc     truncatedState
		hardState *pb.HardState // durable hard state; never mutated in place
		applied   AppliedState
		// pebbleLast is the last index written to Pebble (applied, maybe not
		// yet synced); queuedLast is the last index once every queued append
		// is written. Both serve the log writer's bookkeeping.
		pebbleLast, queuedLast uint64
		// removing is set when removal is queued; installing during a
		// snapshot install. Both refuse new log writer work.
		removing, installing bool
	}
}

var _ raft.Storage = (*GroupStorage)(nil)

func newGroupStorage(s *Store, groupID, replicaID uint64) *GroupStorage {
	g := &GroupStorage{s: s, id: groupID}
	g.mu.replicaID = replicaID
	g.mu.hardState = &pb.HardState{}
	g.mu.applied.ConfState = &pb.ConfState{}
	g.mu.first, g.mu.kept = 1, 1
	return g
}

// ID returns the group ID.
func (g *GroupStorage) ID() uint64 { return g.id }

// ReplicaID returns the ID of the replica this store hosts.
func (g *GroupStorage) ReplicaID() uint64 {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mu.replicaID
}

// setLastLocked publishes the log bounds from trunc and last.
func (g *GroupStorage) setLastLocked(last uint64) {
	g.mu.first = g.mu.trunc.index + 1
	g.mu.last = last
	g.mu.pebbleLast = max(g.mu.pebbleLast, last)
}

// readView is what a reader needs of the group's state, taken at once.
type readView struct {
	gen, first, last uint64
	trunc            truncatedState
	removed          bool
}

func (g *GroupStorage) view() readView {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return readView{gen: g.mu.gen, first: g.mu.first, last: g.mu.last, trunc: g.mu.trunc, removed: g.mu.removing}
}

func (g *GroupStorage) gen() uint64 {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mu.gen
}

// InitialState implements raft.Storage. The commit index is already raised
// to the applied index (see Store.load).
func (g *GroupStorage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return proto.Clone(g.mu.hardState).(*pb.HardState),
		proto.Clone(pb.EnsureConfState(g.mu.applied.ConfState)).(*pb.ConfState), nil
}

// HardState returns the last durable hard state.
func (g *GroupStorage) HardState() *pb.HardState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return proto.Clone(g.mu.hardState).(*pb.HardState)
}

// Applied returns the applied state as last committed by an apply batch or
// a snapshot install.
func (g *GroupStorage) Applied() AppliedState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	a := g.mu.applied
	a.ConfState = proto.Clone(pb.EnsureConfState(a.ConfState)).(*pb.ConfState)
	a.Replicas = maps.Clone(a.Replicas)
	return a
}

// FirstIndex implements raft.Storage.
func (g *GroupStorage) FirstIndex() (uint64, error) {
	return g.view().first, nil
}

// LastIndex implements raft.Storage.
func (g *GroupStorage) LastIndex() (uint64, error) {
	return g.view().last, nil
}

// Snapshot implements raft.Storage. It returns the metadata of the group's
// applied state (index, term, ConfState); the state machine data is read
// separately, from a consistent Pebble snapshot (OpenSnapshot), and streamed.
// Truncation never passes the applied index, so the result always covers
// FirstIndex()-1.
func (g *GroupStorage) Snapshot() (*pb.Snapshot, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	a := g.mu.applied
	if a.Index == 0 || a.Index < g.mu.trunc.index {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index:     new(a.Index),
		Term:      new(a.Term),
		ConfState: proto.Clone(pb.EnsureConfState(a.ConfState)).(*pb.ConfState),
	}}, nil
}

// Term implements raft.Storage: valid on [FirstIndex()-1, LastIndex()].
func (g *GroupStorage) Term(i uint64) (uint64, error) {
	for {
		v := g.view()
		switch {
		case i < v.trunc.index:
			return 0, raft.ErrCompacted
		case i == v.trunc.index:
			return v.trunc.term, nil
		case i > v.last:
			return 0, raft.ErrUnavailable
		}
		if t, ok := g.s.cache.term(g.id, i); ok {
			g.s.cache.metrics.hit()
			return t, nil
		}
		g.s.cache.metrics.miss()
		val, found, err := g.s.get(logKey(g.id, i))
		if err != nil {
			return 0, err // the store has failed; raft will stop
		}
		if found {
			if t, err := decodeEntryTerm(val); err != nil {
				return 0, g.s.readFailed(err)
			} else if g.gen() == v.gen {
				return t, nil
			}
			continue // what we read may be gone already: look again
		}
		if g.gen() == v.gen {
			return 0, g.s.readFailed(errMissing(g.id, i))
		}
	}
}

// Entries implements raft.Storage: entries [lo, hi) up to maxSize bytes (at
// least one), served from the entry cache and then from Pebble.
func (g *GroupStorage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	for {
		v := g.view()
		if lo < v.first {
			return nil, raft.ErrCompacted
		}
		hi = min(hi, v.last+1)
		if lo >= hi {
			return nil, raft.ErrUnavailable
		}
		ents, size, full := g.s.cache.get(g.id, lo, hi, maxSize, make([]*pb.Entry, 0, min(hi-lo, 64)))
		next := lo + uint64(len(ents))
		if next == hi || full {
			g.s.cache.metrics.hit()
			return ents, nil
		}
		g.s.cache.metrics.miss()
		ents, complete, err := g.readLog(ents, next, hi, size, maxSize)
		if err != nil {
			return nil, err
		}
		if g.gen() != v.gen {
			continue // the log changed under us: read it again
		}
		if !complete {
			return nil, g.s.readFailed(errMissing(g.id, next))
		}
		return ents, nil
	}
}

// readLog appends entries [next, hi) from Pebble to ents, whose entries
// already weigh size bytes, stopping at maxSize. complete is false if an
// index was missing.
func (g *GroupStorage) readLog(ents []*pb.Entry, next, hi, size, maxSize uint64) (_ []*pb.Entry, complete bool, err error) {
	defer g.s.recoverFatal(&err)
	if g.s.closed.Load() {
		return nil, false, ErrClosed
	}
	it, err := g.s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(g.id, next), UpperBound: logKey(g.id, hi)})
	if err != nil {
		return nil, false, g.s.readFailed(err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		index, err := parseLogKey(g.id, it.Key())
		if err != nil {
			return nil, false, g.s.readFailed(err)
		}
		if index != next {
			return ents, false, nil
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, false, g.s.readFailed(err)
		}
		e, err := decodeEntry(index, val)
		if err != nil {
			return nil, false, g.s.readFailed(err)
		}
		sz := entrySize(e)
		if len(ents) > 0 && size+sz > maxSize {
			return ents, true, nil
		}
		size += sz
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, false, g.s.readFailed(err)
	}
	return ents, next == hi, nil
}

// ReadLog calls fn, in index order, for each entry in [lo, hi) that Pebble
// holds, with its type and data, until fn returns false. data is valid
// only during the call. It reads entries below the truncation that are
// kept for the state machine too: a state machine that keeps its records
// in the log (rather than copying them at apply) reads them here, up to
// what it applied (entries at or below the applied index never change).
func (g *GroupStorage) ReadLog(lo, hi uint64, fn func(index uint64, typ pb.EntryType, data []byte) bool) (err error) {
	defer g.s.recoverFatal(&err)
	if g.s.closed.Load() {
		return ErrClosed
	}
	if lo >= hi {
		return nil
	}
	var derr error
	err = scanRaw(g.s.db, logKey(g.id, lo), logKey(g.id, hi), func(k, v []byte) bool {
		index, err := parseLogKey(g.id, k)
		if err != nil {
			derr = err
			return false
		}
		_, _, typ, data, err := decodeEntryHeader(v)
		if err != nil {
			derr = fmt.Errorf("entry %d: %w", index, err)
			return false
		}
		return fn(index, typ, data)
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return g.s.readFailed(err)
	}
	return nil
}
