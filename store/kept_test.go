package store

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// readLogIndexes lists the indexes ReadLog yields in [lo, hi).
func readLogIndexes(t *testing.T, g *GroupStorage, lo, hi uint64) []uint64 {
	t.Helper()
	var out []uint64
	if err := g.ReadLog(lo, hi, func(index uint64, _ pb.EntryType, data []byte) bool {
		if want := fmt.Sprintf("entry-%d-term-", index); len(data) < len(want) || string(data[:len(want)]) != want {
			t.Fatalf("entry %d holds %q", index, data)
		}
		out = append(out, index)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func span(lo, hi uint64) []uint64 {
	var out []uint64
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

func equalIdx(a, b []uint64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// stageKept stages a snapshot keeping entries [lo, hi) of term 3.
func stageKept(t *testing.T, g *GroupStorage, lo, hi uint64) *StagedSnapshot {
	t.Helper()
	st, err := g.StageSnapshot(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents(lo, hi, 3) {
		if err := st.PutLogEntry(e.GetIndex(), appendEntryValue(nil, e)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := st.Finish(); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestKeptEntriesCrashAndTruncate: a follower installs a snapshot
// at 15 keeping entries 5..15, crashes (only the kept entries are in its
// log), restarts, appends 16..20, truncates to 17 (the kept entries go
// too), crashes again: every step reads back exactly.
func TestKeptEntriesCrashAndTruncate(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openTest(t, testConfig(fs))
	g, err := s.CreateGroup(1, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := &pb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	applied := AppliedState{Index: 15, Term: 3, ConfState: cs, Replicas: map[uint64]uint64{1: 1, 2: 2, 3: 3}, NextReplicaID: 4}
	st := stageKept(t, g, 5, 16)
	if err := g.InstallStaged(t.Context(), applied, hardState(3, 0, 15), st); err != nil {
		t.Fatal(err)
	}
	st.Discard()
	check := func(g *GroupStorage, first, last uint64, kept []uint64) {
		t.Helper()
		if f, _ := g.FirstIndex(); f != first {
			t.Fatalf("first index %d, want %d", f, first)
		}
		if l, _ := g.LastIndex(); l != last {
			t.Fatalf("last index %d, want %d", l, last)
		}
		if got := readLogIndexes(t, g, 1, 100); !equalIdx(got, kept) {
			t.Fatalf("ReadLog yields %v, want %v", got, kept)
		}
	}
	check(g, 16, 15, span(5, 16))

	fs2 := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(1, 2))})
	s2 := openTest(t, testConfig(fs2))
	g2, _ := s2.Group(1)
	check(g2, 16, 15, span(5, 16))
	if ts, err := g2.Term(15); err != nil || ts != 3 {
		t.Fatalf("term of the snapshot index: %d %v", ts, err)
	}
	appendSync(t, g2, ents(16, 21, 3), hardState(3, 0, 20))
	setApplied(t, g2, 20, 3, cs)
	check(g2, 16, 20, span(5, 21))
	truncateSync(t, g2, 17)
	check(g2, 18, 20, span(18, 21))

	s3 := openTest(t, testConfig(fs2.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(3, 4))})))
	g3, _ := s3.Group(1)
	check(g3, 18, 20, span(18, 21))
}

// TestStagedOverPendingAppend: a staged snapshot with kept entries
// installed over a group that had a longer log of its own (entries past
// the snapshot, some divergent): the excise removes the old log wholly,
// a tail overwrite after it does not touch the kept entries.
func TestStagedOverLongerLog(t *testing.T) {
	s := newMemStore(t)
	g, err := s.CreateGroup(1, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendSync(t, g, ents(1, 31, 2), hardState(2, 0, 3)) // entries 1..30 of term 2, uncommitted past 3
	cs := &pb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	applied := AppliedState{Index: 15, Term: 3, ConfState: cs, Replicas: map[uint64]uint64{1: 1, 2: 2, 3: 3}, NextReplicaID: 4}
	st := stageKept(t, g, 8, 16)
	if err := g.InstallStaged(t.Context(), applied, hardState(3, 0, 15), st); err != nil {
		t.Fatal(err)
	}
	if got := readLogIndexes(t, g, 1, 100); !equalIdx(got, span(8, 16)) {
		t.Fatalf("after the install ReadLog yields %v", got)
	}
	appendSync(t, g, ents(16, 26, 3), hardState(3, 0, 15))
	appendSync(t, g, ents(18, 20, 4), hardState(4, 0, 15)) // a tail overwrite: 20..25 go
	if got := readLogIndexes(t, g, 1, 100); !equalIdx(got, span(8, 20)) {
		t.Fatalf("after a tail overwrite ReadLog yields %v", got)
	}
}
