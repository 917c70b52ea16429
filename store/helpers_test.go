package store

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/internal/await"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is a small store on fs.
func testConfig(fs vfs.FS) Config {
	cfg := DefaultConfig("db")
	cfg.FS = fs
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.MemTableSize = 4 << 20
	cfg.BlockCacheBytes = 8 << 20
	cfg.EntryCacheBytes = 1 << 20
	return cfg
}

func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newMemStore(t testing.TB) *Store {
	return openTest(t, testConfig(vfs.NewMem()))
}

// ent builds an entry of the given index and term with a payload that
// names them, so a stale entry is told apart from a fresh one.
func ent(index, term uint64) *pb.Entry {
	return &pb.Entry{
		Index: new(index),
		Term:  new(term),
		Type:  pb.EntryNormal.Enum(),
		Data:  fmt.Appendf(nil, "entry-%d-term-%d", index, term),
	}
}

func ents(lo, hi, term uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, ent(i, term))
	}
	return out
}

func hardState(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// appendSync appends and waits for durability.
func appendSync(t testing.TB, g *GroupStorage, es []*pb.Entry, hs *pb.HardState) {
	t.Helper()
	done := make(chan struct{})
	if err := g.Append(es, hs, func() { close(done) }); err != nil {
		t.Fatalf("append: %v", err)
	}
	waitClosed(t, g.s, done)
}

func truncateSync(t testing.TB, g *GroupStorage, index uint64) {
	t.Helper()
	done := make(chan struct{})
	if err := g.Truncate(index, func() { close(done) }); err != nil {
		t.Fatalf("truncate: %v", err)
	}
	waitClosed(t, g.s, done)
}

func waitClosed(t testing.TB, s *Store, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-s.Failed():
		t.Fatalf("store failed: %v", s.Err())
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for the log writer")
	}
}

// setApplied commits an apply batch that only moves the applied state.
func setApplied(t testing.TB, g *GroupStorage, index, term uint64, cs *pb.ConfState) {
	t.Helper()
	b := g.NewApplyBatch()
	b.SetApplied(AppliedState{Index: index, Term: term, ConfState: cs})
	if err := b.Commit(); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// founding maps each voter to a node of the same ID.
func founding(voters ...uint64) map[uint64]uint64 {
	if len(voters) == 0 {
		return nil
	}
	m := make(map[uint64]uint64, len(voters))
	for _, v := range voters {
		m[v] = v
	}
	return m
}

func createGroup(t testing.TB, s *Store, groupID uint64, voters ...uint64) *GroupStorage {
	t.Helper()
	g, err := s.CreateGroup(groupID, 1, founding(voters...))
	if err != nil {
		t.Fatalf("create group %d: %v", groupID, err)
	}
	return g
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	await.Until(t, d, what, cond)
}
