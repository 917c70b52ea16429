package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/time/rate"

	"github.com/flotilla-io/flotilla/metrics"
)

// formatVersion is the on-disk layout version written at first open (and
// by the upgrade from an older one, see checkFormat). Version 2: log
// entries may be kept below the truncation (GroupStorage.ReadLog).
const formatVersion = 2

// Store is the one Pebble instance of a host and every group in it.
type Store struct {
	cfg   Config
	opts  *pebble.Options
	db    *pebble.DB
	fs    vfs.FS    // cfg.FS wrapped with disk health checks
	fsCl  io.Closer // stops the disk health checker
	log   *slog.Logger
	m     *metrics.Store
	cache *entryCache
	w     *logWriter

	groups struct {
		sync.RWMutex
		m map[uint64]*GroupStorage
		// tombstones holds, for each group removed from this store, the
		// next replica ID allowed here.
		tombstones map[uint64]uint64
	}

	failure struct {
		once sync.Once
		err  atomic.Pointer[error]
		ch   chan struct{}
	}
	closeOnce sync.Once
	closed    atomic.Bool
	ingestSeq atomic.Uint64
	bgErrLog  logLimiter
}

// logLimiter lets a line through at most once per interval and counts
// the ones it held back.
type logLimiter struct {
	every      rate.Sometimes
	suppressed atomic.Int64
}

// Do runs log with the count of lines suppressed since the last one, or
// counts one more.
func (l *logLimiter) Do(log func(suppressed int64)) {
	ran := false
	l.every.Do(func() {
		ran = true
		log(l.suppressed.Swap(0))
	})
	if !ran {
		l.suppressed.Add(1)
	}
}

// Open opens (or creates) the store in cfg.Dir and loads every group's state.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "store"), m: cfg.Metrics}
	s.bgErrLog.every.Interval = 10 * time.Second
	s.failure.ch = make(chan struct{})
	s.groups.m = make(map[uint64]*GroupStorage)
	s.groups.tombstones = make(map[uint64]uint64)

	fs := cfg.FS
	if cfg.OnDiskFull != nil {
		fs = vfs.OnDiskFull(fs, cfg.OnDiskFull)
	}
	s.fs, s.fsCl = vfs.WithDiskHealthChecks(fs, cfg.DiskStallThreshold, nil, func(info vfs.DiskSlowInfo) {
		s.fail(fmt.Errorf("disk stalled: %s %s for %s (threshold %s)", info.OpType, info.Path, info.Duration, cfg.DiskStallThreshold))
	})
	s.opts = &pebble.Options{
		FS:                          s.fs,
		Logger:                      pebbleLogger{s},
		FormatMajorVersion:          pebble.FormatNewest, // IngestAndExcise needs a recent format
		MemTableSize:                cfg.MemTableSize,
		MemTableStopWritesThreshold: cfg.MemTableStopWritesThreshold,
		CacheSize:                   cfg.BlockCacheBytes,
		EventListener:               s.eventListener(),
	}
	s.opts.EnsureDefaults() // snapshot tables are written with these options
	if err := s.lockDir(); err != nil {
		_ = s.fsCl.Close()
		return nil, err
	}
	removeStaleSnapshotTables(s.fs, cfg.Dir)
	if err := clearStaging(s.fs, cfg.Dir); err != nil {
		_ = s.opts.Lock.Close()
		_ = s.fsCl.Close()
		return nil, err
	}
	db, err := pebble.Open(cfg.Dir, s.opts)
	if err != nil {
		_ = s.opts.Lock.Close()
		_ = s.fsCl.Close()
		return nil, fmt.Errorf("store: open pebble in %q: %w", cfg.Dir, err)
	}
	s.db = db
	s.cache = newEntryCache(cfg.EntryCacheBytes, cacheMetrics{
		hit:   s.m.EntryCacheHits.Inc,
		miss:  s.m.EntryCacheMisses.Inc,
		bytes: func(d int64) { s.m.EntryCacheBytes.Add(float64(d)) },
	})
	err = s.checkFormat()
	if err == nil {
		err = s.checkIdentity()
	}
	if err == nil {
		err = s.load()
	}
	if err != nil {
		_ = db.Close()
		_ = s.opts.Lock.Close()
		_ = s.fsCl.Close()
		return nil, err
	}
	s.w = newLogWriter(s)
	return s, nil
}

// lockDir takes the data directory's lock before anything in it is
// touched, and says in words when another process (or another store of
// this one) holds it.
func (s *Store) lockDir() error {
	if err := s.fs.MkdirAll(s.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("store: create data directory %q: %w", s.cfg.Dir, err)
	}
	lock, err := pebble.LockDirectory(s.cfg.Dir, s.fs)
	var pathErr *iofs.PathError
	switch {
	case err == nil:
		s.opts.Lock = lock
		return nil
	case errors.As(err, &pathErr):
		return fmt.Errorf("store: lock data directory %q: %w", s.cfg.Dir, err)
	default: // the lock itself is held
		return fmt.Errorf("%w: %q is used by another running node (its LOCK file is held): %v", ErrLocked, s.cfg.Dir, err)
	}
}

// checkIdentity records the cluster and node the data directory belongs
// to at its first open, and refuses a later open as another node or in
// another cluster: such a node would load every group, be refused by
// every peer, and serve stale data.
func (s *Store) checkIdentity() error {
	if s.cfg.ClusterID == 0 && s.cfg.NodeID == 0 {
		return nil
	}
	want := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, s.cfg.ClusterID), s.cfg.NodeID)
	v, closer, err := s.db.Get(hostIdentityKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return s.db.Set(hostIdentityKey, want, pebble.Sync)
	case err != nil:
		return fmt.Errorf("store: read identity: %w", err)
	}
	defer closer.Close()
	if len(v) != 16 {
		return fmt.Errorf("%w: identity record of %d bytes", ErrCorrupt, len(v))
	}
	cluster, node := binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	if cluster != s.cfg.ClusterID || node != s.cfg.NodeID {
		return fmt.Errorf("%w: %q holds the data of node %d of cluster %d, but this node was started as node %d of cluster %d",
			ErrIdentity, s.cfg.Dir, node, cluster, s.cfg.NodeID, s.cfg.ClusterID)
	}
	return nil
}

// removeStaleSnapshotTables deletes snapshot tables that a crash left
// between writing and ingesting them. Pebble ignores files it does not own.
func removeStaleSnapshotTables(fs vfs.FS, dir string) {
	names, _ := fs.List(dir)
	for _, name := range names {
		if strings.HasPrefix(name, snapshotTablePrefix) && strings.HasSuffix(name, ".sst") {
			_ = fs.Remove(fs.PathJoin(dir, name))
		}
	}
}

func (s *Store) eventListener() *pebble.EventListener {
	var stallStart atomic.Int64
	return &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			stallStart.Store(time.Now().UnixNano())
			s.m.PebbleWriteStalls.Inc()
			s.log.Warn("pebble write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			if t := stallStart.Swap(0); t != 0 {
				s.m.PebbleWriteStallTime.Add(time.Since(time.Unix(0, t)).Seconds())
			}
		},
		// A background error (a failed flush or compaction) is retried by
		// Pebble and may repeat many times a second, on a full disk for
		// instance: count each, log a few.
		FlushEnd: func(info pebble.FlushInfo) {
			for _, t := range info.Output {
				s.m.PebbleFlushedBytes.Add(float64(t.Size))
			}
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			for _, t := range info.Output.Tables {
				s.m.PebbleCompactedBytes.Add(float64(t.Size))
			}
		},
		BackgroundError: func(err error) {
			s.m.PebbleBackgroundErrors.Inc()
			s.bgErrLog.Do(func(suppressed int64) {
				s.log.Error("pebble background error (retried by pebble)", "err", err, "suppressed", suppressed)
			})
		},
	}
}

func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(hostFormatKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return s.db.Set(hostFormatKey, encodeUint64(formatVersion), pebble.Sync)
	case err != nil:
		return fmt.Errorf("store: read format: %w", err)
	}
	defer closer.Close()
	got, err := decodeUint64(v)
	if err != nil {
		return err
	}
	switch {
	case got == formatVersion:
		return nil
	case got == 1:
		// Version 1 to 2: nothing to rewrite. Version 2 only allows log
		// entries below the truncation (kept for state machines that read
		// the log), which a version 1 build would neither delete nor
		// expect: the bump keeps such a build from opening the store.
		s.log.Info("store: format version 1 upgraded to 2", "dir", s.cfg.Dir)
		return s.db.Set(hostFormatKey, encodeUint64(formatVersion), pebble.Sync)
	default:
		return fmt.Errorf("%w: format version %d, this build reads up to %d (written by a newer build? run that one)",
			ErrCorrupt, got, formatVersion)
	}
}

// load rebuilds every group's in-memory state from Pebble: one seek per
// group to its first key, point reads of its state keys, one reverse seek
// for its last log index.
func (s *Store) load() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixGroup}, UpperBound: []byte{prefixGroup + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; {
		groupID, ok := groupIDOf(it.Key())
		if !ok {
			return fmt.Errorf("%w: key %x", ErrCorrupt, it.Key())
		}
		if err := s.loadGroup(groupID); err != nil {
			return fmt.Errorf("store: load group %d: %w", groupID, err)
		}
		if groupID == ^uint64(0) {
			break
		}
		valid = it.SeekGE(groupPrefix(groupID + 1))
	}
	return it.Error()
}

func (s *Store) loadGroup(groupID uint64) error {
	if v, ok, err := s.get(tombstoneKey(groupID)); err != nil {
		return err
	} else if ok {
		next, err := decodeUint64(v)
		if err != nil {
			return err
		}
		s.groups.tombstones[groupID] = next
	}
	v, ok, err := s.get(replicaIDKey(groupID))
	if err != nil || !ok {
		return err // a removed group keeps only its tombstone
	}
	replicaID, err := decodeUint64(v)
	if err != nil {
		return err
	}
	g := newGroupStorage(s, groupID, replicaID)
	if v, ok, err := s.get(truncatedKey(groupID)); err != nil {
		return err
	} else if ok {
		if g.mu.trunc, err = decodeTruncatedState(v); err != nil {
			return err
		}
	}
	g.mu.hardState = &pb.HardState{}
	if v, ok, err := s.get(hardStateKey(groupID)); err != nil {
		return err
	} else if ok {
		if g.mu.hardState, err = decodeHardState(v); err != nil {
			return err
		}
	}
	if v, ok, err := s.get(appliedKey(groupID)); err != nil {
		return err
	} else if ok {
		if g.mu.applied, err = decodeAppliedState(v); err != nil {
			return err
		}
	}
	first, last, err := s.logBounds(groupID)
	if err != nil {
		return err
	}
	// Entries may all be at or below the truncation: kept for the state
	// machine (ReadLog), raft reads none of them.
	last = max(last, g.mu.trunc.index)
	// Apply and append are not ordered, so the applied index may be ahead of
	// the commit index the last hard state recorded: raise it (raft asserts
	// commit >= applied).
	if g.mu.applied.Index > g.mu.hardState.GetCommit() {
		g.mu.hardState.Commit = new(g.mu.applied.Index)
	}
	g.setLastLocked(last)
	g.mu.kept = g.mu.first
	if first != 0 {
		g.mu.kept = min(first, g.mu.first) // entries kept below the truncation
	}
	g.mu.queuedLast = last
	s.groups.m[groupID] = g
	return nil
}

// logBounds returns the indexes of the group's first and last log entries
// in Pebble, 0 and 0 if its log is empty.
func (s *Store) logBounds(groupID uint64) (first, last uint64, err error) {
	start, end := logSpan(groupID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	if !it.First() {
		return 0, 0, it.Error()
	}
	if first, err = parseLogKey(groupID, it.Key()); err != nil {
		return 0, 0, err
	}
	if !it.Last() {
		return 0, 0, it.Error()
	}
	last, err = parseLogKey(groupID, it.Key())
	return first, last, err
}

// get reads a key; the returned value is a copy.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	if s.closed.Load() {
		return nil, false, ErrClosed
	}
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.readFailed(err)
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// Group returns the storage of a hosted group.
func (s *Store) Group(groupID uint64) (*GroupStorage, bool) {
	s.groups.RLock()
	defer s.groups.RUnlock()
	g, ok := s.groups.m[groupID]
	return g, ok
}

// Groups returns the IDs of every hosted group, in no order.
func (s *Store) Groups() []uint64 {
	s.groups.RLock()
	defer s.groups.RUnlock()
	ids := make([]uint64, 0, len(s.groups.m))
	for id := range s.groups.m {
		ids = append(ids, id)
	}
	return ids
}

// Tombstone returns the next replica ID allowed for a removed group, and
// whether the group has a tombstone.
func (s *Store) Tombstone(groupID uint64) (uint64, bool) {
	s.groups.RLock()
	defer s.groups.RUnlock()
	next, ok := s.groups.tombstones[groupID]
	return next, ok
}

// Err returns the error the store failed with, or nil.
func (s *Store) Err() error {
	if p := s.failure.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Failed is closed when the store fails.
func (s *Store) Failed() <-chan struct{} { return s.failure.ch }

// fail puts the store in the failed state. Only the first cause is kept.
// It must not block: the disk health checker calls it.
func (s *Store) fail(cause error) {
	s.failure.once.Do(func() {
		err := fmt.Errorf("%w: %w", ErrFailed, cause)
		s.failure.err.Store(&err)
		close(s.failure.ch)
		s.m.Failed.Set(1)
		s.log.Error("store failed; refusing all further work", "err", cause)
		if s.cfg.OnFailure != nil {
			s.cfg.OnFailure(err)
		}
	})
}

// readFailed fails the store for a read error and returns the store's error.
func (s *Store) readFailed(err error) error {
	s.fail(fmt.Errorf("read: %w", err))
	return s.Err()
}

// usable returns the error that stops new work, if any.
func (s *Store) usable() error {
	if err := s.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close stops the log writer once it has committed what it was given, and
// closes Pebble. After a failure it releases what it can. It waits for a
// sync in progress: on a disk that never returns one, it does not return
// either (the host has failed and exits).
//
// The caller stops using the store's groups first; calls made after Close
// return ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.w.close()
		err = s.closePebble()
		if cerr := s.opts.Lock.Close(); err == nil {
			err = cerr
		}
		if cerr := s.fsCl.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

func (s *Store) closePebble() (err error) {
	defer func() {
		// A Pebble that met a fatal error may refuse to close cleanly.
		if r := recover(); r != nil {
			err = fmt.Errorf("store: closing pebble after failure: %v", r)
		}
	}()
	return s.db.Close()
}

// pebbleLogger routes Pebble's messages to slog. Pebble calls Fatalf where
// it would exit the process (a WAL or MANIFEST write failing): we fail the
// store instead, so the host stops (fail-stop) and tests can observe it,
// then panic to unwind Pebble; the store's own calls into Pebble recover it.
type pebbleLogger struct{ s *Store }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Info(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.log.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := fmt.Errorf("pebble: "+format, args...)
	l.s.fail(err)
	panic(pebbleFatal{err})
}

type pebbleFatal struct{ err error }

// recoverFatal turns a pebbleFatal panic into the store's error.
func (s *Store) recoverFatal(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(pebbleFatal)
		if !ok {
			panic(r)
		}
		s.fail(f.err)
		*err = s.Err()
	}
}
