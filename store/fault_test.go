package store

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

func isWALSync(op errorfs.Op) bool {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return strings.HasSuffix(op.Path, ".log")
	}
	return false
}

// TestSyncFailureFailsStore: once a WAL sync fails, the store is failed,
// the host is told once, no completion runs for the failed batch or any
// later one, and every later call returns the failure.
func TestSyncFailureFailsStore(t *testing.T) {
	var failSyncs atomic.Bool
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failSyncs.Load() && isWALSync(op) {
			return errorfs.ErrInjected
		}
		return nil
	}))
	cfg := testConfig(fs)
	var failures atomic.Int32
	cfg.OnFailure = func(error) { failures.Add(1) }
	s := openTest(t, cfg)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 13, 6), hardState(6, 1, 12))

	failSyncs.Store(true)
	var completed atomic.Int32
	next := uint64(13)
	for i := 0; i < 50; i++ {
		err := g.Append(ents(next, next+1, 6), nil, func() { completed.Add(1) })
		if err != nil {
			if !errors.Is(err, ErrFailed) {
				t.Fatalf("append after sync failure: %v, want ErrFailed", err)
			}
			break
		}
		next++
	}
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("store did not fail after a WAL sync error")
	}
	if err := s.Err(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Err() = %v, want ErrFailed", err)
	}
	if err := g.Append(ents(next, next+1, 6), nil, func() { completed.Add(1) }); !errors.Is(err, ErrFailed) {
		t.Fatalf("append on failed store: %v", err)
	}
	if _, err := s.CreateGroup(2, 1, founding(1)); !errors.Is(err, ErrFailed) {
		t.Fatalf("create on failed store: %v", err)
	}
	b := g.NewApplyBatch()
	b.SetApplied(AppliedState{Index: 12, Term: 6, ConfState: &pb.ConfState{Voters: []uint64{1}}})
	if err := b.Commit(); !errors.Is(err, ErrFailed) {
		t.Fatalf("apply on failed store: %v", err)
	}
	_ = s.Close() // waits for the writer: any completion would have run by now
	if n := completed.Load(); n != 0 {
		t.Fatalf("%d completions ran for batches whose sync failed", n)
	}
	if n := failures.Load(); n != 1 {
		t.Fatalf("OnFailure called %d times, want 1", n)
	}
}

// TestDiskStallFailsStore: a WAL sync that hangs past DiskStallThreshold
// fails the store, and the stalled batch's completion never runs, not even
// once the disk comes back.
func TestDiskStallFailsStore(t *testing.T) {
	var stall atomic.Bool
	release := make(chan struct{})
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if stall.Load() && isWALSync(op) {
			<-release
		}
		return nil
	}))
	cfg := testConfig(fs)
	cfg.DiskStallThreshold = 50 * time.Millisecond
	s := openTest(t, cfg)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 12, 6), nil)

	stall.Store(true)
	var completed atomic.Bool
	if err := g.Append(ents(12, 13, 6), nil, func() { completed.Store(true) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Failed():
	case <-time.After(15 * time.Second):
		t.Fatal("store did not fail on a stalled disk")
	}
	if err := s.Err(); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "disk stalled") {
		t.Fatalf("Err() = %v, want a disk stall failure", err)
	}
	stall.Store(false)
	close(release)
	_ = s.Close()
	if completed.Load() {
		t.Fatal("the stalled batch's completion ran after the store failed")
	}
}

// TestPebbleFatalFailsStore: Pebble's Fatalf (which would exit the process
// with Pebble's default logger) fails the store instead.
func TestPebbleFatalFailsStore(t *testing.T) {
	s := newMemStore(t)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("Fatalf did not unwind")
			}
		}()
		pebbleLogger{s}.Fatalf("MANIFEST sync failed: %v", errorfs.ErrInjected)
	}()
	if err := s.Err(); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "MANIFEST") {
		t.Fatalf("Err() = %v", err)
	}
}

// TestReadCorruptionFailsStore: an undecodable entry fails the store rather
// than reach raft as garbage, and raft sees an error, never a panic from us.
func TestReadCorruptionFailsStore(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 14, 6), nil)
	s.cache.drop(1)
	if err := s.db.Set(logKey(1, 12), []byte{0xff}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Entries(11, 14, 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Entries over a corrupt entry: %v", err)
	}
	if !errors.Is(s.Err(), ErrFailed) {
		t.Fatalf("store not failed: %v", s.Err())
	}
}

// TestClosedStore: calls after Close return ErrClosed, never panic.
func TestClosedStore(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 13, 6), nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Append(ents(13, 14, 6), nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append: %v", err)
	}
	if err := g.NewApplyBatch().Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("apply: %v", err)
	}
	s.cache.drop(1)
	if _, err := g.Entries(11, 13, 1<<20); !errors.Is(err, ErrClosed) {
		t.Errorf("Entries: %v", err)
	}
	if _, _, err := g.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Errorf("Get: %v", err)
	}
	if _, err := s.CreateGroup(2, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateGroup: %v", err)
	}
}
