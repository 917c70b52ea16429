package store

import (
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Staged snapshots.
//
// A snapshot arriving from a peer is written to disk as it arrives, never
// held whole in memory: its state machine data goes, key by key, into an
// SSTable in the staging directory inside the data directory (Pebble's
// table writer keeps about a block in memory). Once the stream has
// arrived whole the table is finished (synced), and the install ingests it
// with IngestAndExcise together with a small table of the group's raft
// state. A stream that fails, or a staged snapshot raft does not take, is
// discarded and its file removed; files a crash left are removed when the
// store opens.

// StagingDir is the staging directory's name inside the data directory.
const StagingDir = "snapshot-staging"

// StagedSnapshot is a snapshot's state machine data being written to, or
// written to, a table in the staging directory. It belongs to one goroutine
// until Finish; then InstallStaged or Discard, once, ends it.
type StagedSnapshot struct {
	// OnIngest, if set, runs once the install's ingest made the snapshot
	// visible, before InstallStaged returns.
	OnIngest func()

	g      *GroupStorage
	path   string
	w      *sstable.Writer
	sw     *SnapshotWriter
	size   int64
	done   atomic.Bool // finished (file complete) or discarded
	gone   atomic.Bool // discarded or ingested: the file is not ours
	chunks uint32      // state snapshot chunks written
	// firstLog and lastLog bound the log entries written (0: none);
	// maxLog is the snapshot's index, which none may pass.
	firstLog, lastLog, maxLog uint64
}

// StageSnapshot starts a staged snapshot, at index, of the group's state
// machine data. The caller must Finish and install it, or Discard it.
func (g *GroupStorage) StageSnapshot(index uint64) (st *StagedSnapshot, err error) {
	defer g.s.recoverFatal(&err)
	if err := g.s.usable(); err != nil {
		return nil, err
	}
	dir := g.s.fs.PathJoin(g.s.cfg.Dir, StagingDir)
	path := g.s.fs.PathJoin(dir, fmt.Sprintf("%d-%d.sst", g.id, g.s.ingestSeq.Add(1)))
	f, err := g.s.fs.Create(path, "flotilla-staged-snapshot")
	if err != nil {
		return nil, fmt.Errorf("store: create staged snapshot table: %w", err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), g.s.opts.MakeWriterOptions(0, g.s.db.TableFormat()))
	return &StagedSnapshot{g: g, path: path, w: w, sw: &SnapshotWriter{groupID: g.id, w: w}, maxLog: index}, nil
}

// Put writes a state machine key; keys must come in ascending order.
func (st *StagedSnapshot) Put(key, value []byte) error { return st.sw.Put(key, value) }

// WriteState writes the next piece of an in-memory state machine's
// snapshot, which must come before any Put. Pieces are stored as they
// come, at most one state snapshot chunk each.
func (st *StagedSnapshot) WriteState(p []byte) error {
	if st.sw.dataSet {
		return fmt.Errorf("%w: state snapshot after data keys", ErrInvalid)
	}
	for len(p) > 0 {
		n := min(len(p), stateSnapshotChunk)
		if err := st.w.Set(stateSnapshotKey(st.g.id, st.chunks), p[:n]); err != nil {
			return err
		}
		st.chunks++
		p = p[n:]
	}
	return nil
}

// PutLogEntry writes a log entry the state machine keeps (see ReadLog),
// as SnapshotReader.ScanLog read it. Entries come after the state
// snapshot and before any data key, in ascending order, and must be at or
// below the snapshot's index.
func (st *StagedSnapshot) PutLogEntry(index uint64, value []byte) error {
	switch {
	case st.sw.dataSet:
		return fmt.Errorf("%w: log entry after data keys", ErrInvalid)
	case index == 0 || index <= st.lastLog:
		return fmt.Errorf("%w: log entry %d after %d", ErrInvalid, index, st.lastLog)
	case index > st.maxLog:
		return fmt.Errorf("%w: log entry %d above the snapshot's index %d", ErrInvalid, index, st.maxLog)
	}
	if _, _, _, _, err := decodeEntryHeader(value); err != nil {
		return fmt.Errorf("%w: log entry %d: %w", ErrInvalid, index, err)
	}
	if err := st.w.Set(logKey(st.g.id, index), value); err != nil {
		return err
	}
	if st.firstLog == 0 {
		st.firstLog = index
	}
	st.lastLog = index
	return nil
}

// Finish completes and syncs the table. On error the staged snapshot is
// discarded.
func (st *StagedSnapshot) Finish() (err error) {
	defer st.g.s.recoverFatal(&err)
	if st.done.Swap(true) {
		return fmt.Errorf("%w: staged snapshot finished twice", ErrInvalid)
	}
	err = st.w.Close()
	if err != nil {
		st.remove()
		return fmt.Errorf("store: finish staged snapshot table: %w", err)
	}
	if fi, serr := st.g.s.fs.Stat(st.path); serr == nil {
		st.size = fi.Size()
	}
	return nil
}

// Size is the staged table's size on disk once finished.
func (st *StagedSnapshot) Size() int64 { return st.size }

// empty reports whether nothing was written: there is no table to ingest.
func (st *StagedSnapshot) empty() bool { return st.chunks == 0 && !st.sw.dataSet && st.lastLog == 0 }

// Discard removes the staged table (whether finished or not). It is a
// no-op once the table was installed or discarded.
func (st *StagedSnapshot) Discard() {
	if !st.done.Swap(true) {
		_ = st.w.Close() // abandon the half-written table
	}
	st.remove()
}

func (st *StagedSnapshot) remove() {
	if !st.gone.Swap(true) {
		_ = st.g.s.fs.Remove(st.path)
	}
}

// clearStaging empties the staging directory (what a crash left there) and
// makes sure it exists.
func clearStaging(fs vfs.FS, dir string) error {
	staging := fs.PathJoin(dir, StagingDir)
	names, _ := fs.List(staging)
	for _, name := range names {
		if err := fs.Remove(fs.PathJoin(staging, name)); err != nil {
			return fmt.Errorf("store: remove stale staged snapshot %q: %w", name, err)
		}
	}
	if err := fs.MkdirAll(staging, 0o755); err != nil {
		return fmt.Errorf("store: create %q: %w", staging, err)
	}
	return nil
}
