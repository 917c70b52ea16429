package store

import (
	"bytes"
	"context"
	"fmt"
	"maps"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// snapshotTablePrefix names the SSTables written for snapshot installs.
const snapshotTablePrefix = "flotilla-snapshot-"

// SnapshotWriter receives a snapshot's state machine data during
// InstallSnapshot: first the state snapshot of an in-memory state machine,
// if any, then the data keys in ascending order.
type SnapshotWriter struct {
	groupID uint64
	w       *sstable.Writer
	key     []byte
	dataSet bool
}

// SetStateSnapshot writes an in-memory state machine's snapshot. It must
// come before any Put.
func (sw *SnapshotWriter) SetStateSnapshot(data []byte) error {
	if sw.dataSet {
		return fmt.Errorf("%w: state snapshot after data keys", ErrInvalid)
	}
	return putStateSnapshot(sw.groupID, data, sw.w.Set)
}

// Put writes a state machine key; keys must come in ascending order.
func (sw *SnapshotWriter) Put(key, value []byte) error {
	if sw.dataSet && bytes.Compare(key, sw.key[dataPrefixLen:]) <= 0 {
		return fmt.Errorf("%w: snapshot key %q after %q", ErrInvalid, key, sw.key[dataPrefixLen:])
	}
	sw.dataSet = true
	sw.key = appendDataKey(sw.key[:0], sw.groupID, key)
	return sw.w.Set(sw.key, value)
}

// InstallSnapshot replaces the group's replica span with a snapshot: its
// raft state (hs's term and vote with the snapshot's index as commit,
// truncation at the snapshot's index and term, an empty log, the applied
// state the snapshot brings: index, term, ConfState, replicas) and the
// state machine data that write produces. It stages the data (see
// StageSnapshot) and installs it with InstallStaged.
func (g *GroupStorage) InstallSnapshot(ctx context.Context, applied AppliedState, hs *pb.HardState, write func(*SnapshotWriter) error) error {
	st, err := g.StageSnapshot(applied.Index)
	if err != nil {
		return err
	}
	if err := write(st.sw); err != nil {
		st.Discard()
		return err
	}
	if err := st.Finish(); err != nil {
		return err
	}
	defer st.Discard()
	return g.InstallStaged(ctx, applied, hs, st)
}

// InstallStaged replaces the group's replica span with a snapshot whose
// state machine data was staged (and finished) in st, and the raft state
// InstallSnapshot describes. The whole span is swapped atomically and
// durably by ingesting the two tables with IngestAndExcise, off the shared
// log writer, so a large snapshot never stalls other groups' fsyncs; the
// ingest links the staged file, it copies no data.
//
// The group's queued appends are made durable first, and no new log writer
// work is taken for it until the install returns. After it the group's
// cache entries are gone and the storage reads as the snapshot, and st is
// spent. If the log writer's queue is too full to take the group's
// barrier, it returns ErrBusy having changed nothing (st may be installed
// later); if the ingest fails, the store fails.
func (g *GroupStorage) InstallStaged(ctx context.Context, applied AppliedState, hs *pb.HardState, st *StagedSnapshot) error {
	index, term := applied.Index, applied.Term
	switch {
	case index == 0:
		return fmt.Errorf("%w: snapshot at index 0", ErrInvalid)
	case st.g != g || !st.done.Load() || st.gone.Load():
		return fmt.Errorf("%w: staged snapshot not finished, spent, or another group's", ErrInvalid)
	case st.lastLog > index:
		return fmt.Errorf("%w: snapshot at %d keeps log entries up to %d", ErrInvalid, index, st.lastLog)
	}
	hs = mergeHardState(hs, index, term)
	g.mu.Lock()
	if err := g.acceptingLocked(); err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.installing = true
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.mu.installing = false
		g.mu.Unlock()
	}()
	if err := g.barrier(); err != nil {
		return err
	}
	applied.ConfState = pb.EnsureConfState(applied.ConfState)
	applied.Replicas = maps.Clone(applied.Replicas)
	path, err := g.writeSnapshotTable(hs, applied)
	if err != nil {
		return err
	}
	defer func() { _ = g.s.fs.Remove(path) }()
	if err := ctx.Err(); err != nil {
		return err
	}
	paths := []string{path}
	if !st.empty() {
		paths = append(paths, st.path)
	}

	// Unpublish the old log before Pebble swaps the span.
	g.mu.Lock()
	g.mu.gen++
	g.mu.trunc = truncatedState{index: index, term: term}
	g.mu.first, g.mu.last = index+1, index
	g.mu.kept = index + 1
	if st.firstLog != 0 {
		g.mu.kept = st.firstLog
	}
	g.mu.pebbleLast, g.mu.queuedLast = index, index
	g.mu.Unlock()
	g.s.cache.drop(g.id)

	err = g.ingest(ctx, paths)
	st.remove()
	if err != nil {
		g.s.fail(fmt.Errorf("snapshot ingest for group %d: %w", g.id, err))
		return g.s.Err()
	}
	if st.OnIngest != nil {
		st.OnIngest()
	}
	g.mu.Lock()
	g.mu.hardState = hs
	g.mu.applied = applied
	g.mu.Unlock()
	g.s.m.SnapshotsInstalled.Inc()
	return nil
}

// mergeHardState makes the hard state consistent with a snapshot at
// (index, term) and the empty log after it: its commit is the snapshot's
// index. A commit index beyond it (raft's, when the entries after the
// snapshot come in the same append) is written with those entries: the
// log must hold them first, or a crash in between leaves a commit index
// the log does not cover and raft refuses to start.
func mergeHardState(hs *pb.HardState, index, term uint64) *pb.HardState {
	out := &pb.HardState{Term: new(max(hs.GetTerm(), term)), Commit: new(index)}
	if hs.GetVote() != 0 {
		out.Vote = new(hs.GetVote())
	}
	return out
}

// writeSnapshotTable writes the table of a snapshot's raft state.
func (g *GroupStorage) writeSnapshotTable(hs *pb.HardState, applied AppliedState) (path string, err error) {
	defer g.s.recoverFatal(&err)
	path = g.s.fs.PathJoin(g.s.cfg.Dir, fmt.Sprintf("%s%d-%d.sst", snapshotTablePrefix, g.id, g.s.ingestSeq.Add(1)))
	f, err := g.s.fs.Create(path, "flotilla-snapshot")
	if err != nil {
		return "", fmt.Errorf("store: create snapshot table: %w", err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), g.s.opts.MakeWriterOptions(0, g.s.db.TableFormat()))
	hsv, err := encodeHardState(hs)
	if err == nil {
		var av []byte
		if av, err = applied.encode(); err == nil {
			err = firstErr(w.Set(hardStateKey(g.id), hsv),
				w.Set(truncatedKey(g.id), truncatedState{index: applied.Index, term: applied.Term}.encode()),
				w.Set(appliedKey(g.id), av))
		}
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = g.s.fs.Remove(path)
		return "", err
	}
	return path, nil
}

func (g *GroupStorage) ingest(ctx context.Context, paths []string) (err error) {
	defer g.s.recoverFatal(&err)
	start, end := replicaSpan(g.id)
	_, err = g.s.db.IngestAndExcise(ctx, paths, nil, nil, pebble.KeyRange{Start: start, End: end})
	return err
}

// SnapshotReader is a consistent view of a group's replica span for sending
// a snapshot: its metadata and data come from one Pebble snapshot.
type SnapshotReader struct {
	g       *GroupStorage
	snap    *pebble.Snapshot
	meta    *pb.SnapshotMetadata
	applied AppliedState
}

// OpenSnapshot takes a consistent view of the group's applied state and
// state machine data. The caller must Close it.
func (g *GroupStorage) OpenSnapshot() (r *SnapshotReader, err error) {
	defer g.s.recoverFatal(&err)
	if err := g.s.usable(); err != nil {
		return nil, err
	}
	snap := g.s.db.NewSnapshot()
	v, closer, err := snap.Get(appliedKey(g.id))
	if err != nil {
		_ = snap.Close()
		if err == pebble.ErrNotFound {
			return nil, raft.ErrSnapshotTemporarilyUnavailable
		}
		return nil, g.s.readFailed(err)
	}
	applied, err := decodeAppliedState(v)
	_ = closer.Close()
	if err != nil {
		_ = snap.Close()
		return nil, g.s.readFailed(err)
	}
	meta := &pb.SnapshotMetadata{Index: new(applied.Index), Term: new(applied.Term), ConfState: applied.ConfState}
	return &SnapshotReader{g: g, snap: snap, meta: meta, applied: applied}, nil
}

// Metadata returns the index, term and ConfState the data reflects.
func (r *SnapshotReader) Metadata() *pb.SnapshotMetadata { return r.meta }

// Applied returns the applied state the view reflects.
func (r *SnapshotReader) Applied() AppliedState {
	a := r.applied
	a.Replicas = maps.Clone(a.Replicas)
	return a
}

// StateSnapshot returns an in-memory state machine's durable snapshot in
// the view, or nil.
func (r *SnapshotReader) StateSnapshot() ([]byte, error) {
	return readStateSnapshot(r.snap, r.g.id)
}

// Scan calls fn for every state machine key of the view, in order, until fn
// returns false. key and value are valid only during the call.
func (r *SnapshotReader) Scan(fn func(key, value []byte) bool) error {
	start, end := dataSpan(r.g.id)
	return scanData(r.snap, start, end, fn)
}

// ScanLog calls fn for each log entry of the view from index lo to the
// view's applied index, in order, with its stored value (for
// StagedSnapshot.PutLogEntry), until fn returns false: the entries a state
// machine that reads the log keeps. value is valid only during the call.
func (r *SnapshotReader) ScanLog(lo uint64, fn func(index uint64, value []byte) bool) error {
	if lo == 0 || lo > r.applied.Index {
		return nil
	}
	return scanRaw(r.snap, logKey(r.g.id, lo), logKey(r.g.id, r.applied.Index+1), func(k, v []byte) bool {
		index, err := parseLogKey(r.g.id, k)
		return err == nil && fn(index, v)
	})
}

// Close releases the view.
func (r *SnapshotReader) Close() error { return r.snap.Close() }
