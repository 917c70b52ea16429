package store

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/internal/testseed"
)

// TestCrashRecovery issues random appends (with tail overwrites), hard
// states and truncations for several groups through the log writer, cuts
// the power at a random moment (CrashClone keeps every synced byte and a
// random share of the unsynced ones), reopens, and checks each group: its
// log is contiguous, and its whole state is what some prefix of the
// operations issued to it would leave, a prefix that includes every
// operation whose completion had run. So nothing acknowledged is lost and
// nothing half-written is visible.
func TestCrashRecovery(t *testing.T) {
	testseed.Run(t, testseed.Range(1, 48), testCrashRecovery)
}

type crashOp struct {
	kind      itemKind // itemAppend or itemTruncate
	entries   []*pb.Entry
	hardState *pb.HardState
	truncate  uint64
}

// crashModel is a group's state as a replay of its operations.
type crashModel struct {
	trunc     truncatedState
	last      uint64
	log       map[uint64]*pb.Entry
	hardState *pb.HardState
}

func newCrashModel() *crashModel {
	return &crashModel{
		trunc:     truncatedState{InitialIndex, InitialTerm},
		last:      InitialIndex,
		log:       map[uint64]*pb.Entry{},
		hardState: &pb.HardState{Term: new(uint64(InitialTerm)), Commit: new(uint64(InitialIndex))},
	}
}

func (m *crashModel) apply(op crashOp) {
	switch op.kind {
	case itemAppend:
		if len(op.entries) > 0 {
			first := op.entries[0].GetIndex()
			for i := first; i <= m.last; i++ {
				delete(m.log, i)
			}
			for _, e := range op.entries {
				m.log[e.GetIndex()] = e
			}
			m.last = op.entries[len(op.entries)-1].GetIndex()
		}
		if op.hardState != nil {
			m.hardState = op.hardState
		}
	case itemTruncate:
		if op.truncate > m.trunc.index {
			m.trunc = truncatedState{op.truncate, m.log[op.truncate].GetTerm()}
			for i := range m.log {
				if i <= op.truncate {
					delete(m.log, i)
				}
			}
		}
	}
}

func (m *crashModel) equal(g *GroupStorage) error {
	v := g.view()
	if v.trunc != m.trunc || v.last != m.last {
		return fmt.Errorf("bounds: trunc %v last %d, model trunc %v last %d", v.trunc, v.last, m.trunc, m.last)
	}
	// The apply batches are unsynced but ordered before later log writes in
	// the WAL; load raises commit to whatever applied index survived.
	hs := g.HardState()
	wantCommit := max(m.hardState.GetCommit(), g.Applied().Index)
	if hs.GetTerm() != m.hardState.GetTerm() || hs.GetCommit() != wantCommit || hs.GetVote() != m.hardState.GetVote() {
		return fmt.Errorf("hard state %v, model %v", hs, m.hardState)
	}
	if m.last < v.first {
		return nil
	}
	es, err := g.Entries(v.first, m.last+1, 1<<62)
	if err != nil {
		return fmt.Errorf("entries [%d, %d]: %w", v.first, m.last, err)
	}
	if uint64(len(es)) != m.last-v.first+1 {
		return fmt.Errorf("log not contiguous: %d entries in [%d, %d]", len(es), v.first, m.last)
	}
	for _, e := range es {
		want := m.log[e.GetIndex()]
		if e.GetTerm() != want.GetTerm() || !bytes.Equal(e.GetData(), want.GetData()) {
			return fmt.Errorf("entry %d: %d/%q, model %d/%q", e.GetIndex(), e.GetTerm(), e.GetData(), want.GetTerm(), want.GetData())
		}
	}
	return nil
}

type crashGroup struct {
	g        *GroupStorage
	ops      []crashOp
	acked    int // ops whose completion ran (a prefix: completions are FIFO)
	term     uint64
	issued   *crashModel
	appliedT uint64
}

func testCrashRecovery(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	fs := vfs.NewCrashableMem()
	cfg := testConfig(fs)
	cfg.MaxBatchItems = 1 + rng.IntN(16) // vary how items share batches
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const numGroups = 6
	var mu sync.Mutex // guards acked counts
	groups := make([]*crashGroup, numGroups)
	for i := range groups {
		groups[i] = &crashGroup{g: createGroup(t, s, uint64(i+1), 1), term: InitialTerm, issued: newCrashModel()}
	}
	issue := func(cg *crashGroup, op crashOp) {
		cg.ops = append(cg.ops, op)
		cg.issued.apply(op)
		done := func() {
			mu.Lock()
			cg.acked++
			mu.Unlock()
		}
		var err error
		if op.kind == itemAppend {
			err = cg.g.Append(op.entries, op.hardState, done)
		} else {
			err = cg.g.Truncate(op.truncate, done)
		}
		if err != nil {
			t.Fatalf("op %d on group %d: %v", len(cg.ops), cg.g.id, err)
		}
	}

	steps := 50 + rng.IntN(300)
	crashAt := rng.IntN(steps)
	var acked []int
	var clone *vfs.MemFS
	for step := 0; step < steps; step++ {
		if step == crashAt {
			// Everything acknowledged before the cut must survive it.
			mu.Lock()
			for _, cg := range groups {
				acked = append(acked, cg.acked)
			}
			mu.Unlock()
			clone = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 0))})
		}
		cg := groups[rng.IntN(numGroups)]
		m := cg.issued
		switch r := rng.IntN(10); {
		case r < 7: // append, sometimes overwriting the uncommitted tail
			first := m.last + 1
			if r == 0 && m.last > m.hardState.GetCommit() && m.last > m.trunc.index {
				lo := max(m.hardState.GetCommit(), m.trunc.index) + 1
				first = lo + rng.Uint64N(m.last-lo+1)
				cg.term++
			}
			n := uint64(1 + rng.IntN(5))
			es := make([]*pb.Entry, n)
			for i := range es {
				idx := first + uint64(i)
				es[i] = &pb.Entry{Index: new(idx), Term: new(cg.term), Data: fmt.Appendf(nil, "g%d-op%d-i%d", cg.g.id, len(cg.ops), idx)}
			}
			var hs *pb.HardState
			if rng.IntN(2) == 0 {
				commit := max(m.hardState.GetCommit(), min(first-1, m.last))
				hs = &pb.HardState{Term: new(cg.term), Vote: new(uint64(1)), Commit: new(commit)}
			}
			issue(cg, crashOp{kind: itemAppend, entries: es, hardState: hs})
		case r < 9: // truncate what is durable and committed
			// Like raft, never truncate an entry that a queued append may
			// still overwrite (the store would truncate less than asked).
			durable, _ := cg.g.LastIndex()
			limit := min(durable, m.hardState.GetCommit(), m.last)
			mu.Lock()
			prevLast := newCrashModel()
			for k, op := range cg.ops {
				if k >= cg.acked && op.kind == itemAppend && len(op.entries) > 0 && op.entries[0].GetIndex() <= prevLast.last {
					limit = min(limit, op.entries[0].GetIndex()-1)
				}
				prevLast.apply(op)
			}
			mu.Unlock()
			if limit <= m.trunc.index {
				continue
			}
			index := m.trunc.index + 1 + rng.Uint64N(limit-m.trunc.index)
			// Truncation needs the entries applied first; durable entries at
			// or below the commit index are safe to apply.
			if index > cg.appliedT {
				term, err := cg.g.Term(index)
				if err != nil {
					t.Fatalf("term %d: %v", index, err)
				}
				setApplied(t, cg.g, index, term, &pb.ConfState{Voters: []uint64{1}})
				cg.appliedT = index
			}
			issue(cg, crashOp{kind: itemTruncate, truncate: index})
		default: // wait for everything queued so far, so acks interleave with the crash
			if err := cg.g.barrier(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if clone == nil {
		t.Fatal("no crash taken")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, testConfig(clone))
	for i, cg := range groups {
		g, ok := s2.Group(cg.g.id)
		if !ok {
			t.Fatalf("group %d lost", cg.g.id)
		}
		if a := g.Applied(); a.Index != 0 && a.Index < g.view().trunc.index {
			t.Fatalf("group %d: truncated to %d past applied %d", cg.g.id, g.view().trunc.index, a.Index)
		}
		m := newCrashModel()
		for _, op := range cg.ops[:acked[i]] {
			m.apply(op)
		}
		var errs []error
		matched := false
		for k := acked[i]; ; k++ {
			err := m.equal(g)
			if err == nil {
				matched = true
				break
			}
			errs = append(errs, fmt.Errorf("prefix %d: %w", k, err))
			if k == len(cg.ops) {
				break
			}
			m.apply(cg.ops[k])
		}
		if !matched {
			t.Fatalf("group %d (acked %d of %d ops) recovered to no prefix of its operations:\n%v",
				cg.g.id, acked[i], len(cg.ops), errs)
		}
	}
}

// TestCrashLifecycle: what CreateGroup, RemoveGroup and InstallSnapshot
// have returned from survives a power cut that loses every unsynced byte.
func TestCrashLifecycle(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openTest(t, testConfig(fs))
	g := createGroup(t, s, 1, 1, 2, 3)
	appendSync(t, g, ents(11, 21, 6), hardState(6, 1, 15))
	createGroup(t, s, 2, 1)
	if err := s.RemoveGroup(2, 5); err != nil {
		t.Fatal(err)
	}
	g3, err := s.CreateGroup(3, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	applied := AppliedState{Index: 500, Term: 9, ConfState: &pb.ConfState{Voters: []uint64{5, 7}}, Replicas: map[uint64]uint64{5: 1, 7: 2}, NextReplicaID: 8}
	if err := g3.InstallSnapshot(t.Context(), applied, hardState(9, 5, 0), func(w *SnapshotWriter) error {
		return firstErr(w.SetStateSnapshot([]byte("in-memory state")), w.Put([]byte("k"), []byte("v")))
	}); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, testConfig(fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})))
	if got := sortedGroups(s2); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("groups after crash: %v", got)
	}
	if next, ok := s2.Tombstone(2); !ok || next != 5 {
		t.Fatalf("tombstone of group 2: %d %t", next, ok)
	}
	g1, _ := s2.Group(1)
	if err := (&crashModel{
		trunc: truncatedState{InitialIndex, InitialTerm}, last: 20,
		log: func() map[uint64]*pb.Entry {
			m := map[uint64]*pb.Entry{}
			for _, e := range ents(11, 21, 6) {
				m[e.GetIndex()] = e
			}
			return m
		}(),
		hardState: hardState(6, 1, 15),
	}).equal(g1); err != nil {
		t.Fatal(err)
	}
	g3, _ = s2.Group(3)
	if g3.ReplicaID() != 7 {
		t.Fatalf("replica ID %d", g3.ReplicaID())
	}
	hs := g3.HardState()
	a := g3.Applied()
	first, _ := g3.FirstIndex()
	if a.Index != 500 || a.Term != 9 || first != 501 || hs.GetCommit() != 500 || hs.GetVote() != 5 || a.Replicas[7] != 2 || a.NextReplicaID != 8 {
		t.Fatalf("after crash: applied %+v, first %d, hard state %v", a, first, hs)
	}
	if data, err := g3.LoadStateSnapshot(); err != nil || string(data) != "in-memory state" {
		t.Fatalf("state snapshot %q, %v", data, err)
	}
	if v, ok, err := g3.Get([]byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("k = %q %t %v", v, ok, err)
	}
}

// TestStaleSnapshotTableRemoved: a snapshot table left behind by a crash
// before its ingest is removed at the next open.
func TestStaleSnapshotTableRemoved(t *testing.T) {
	fs := vfs.NewMem()
	s := openTest(t, testConfig(fs))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stale := fs.PathJoin("db", snapshotTablePrefix+"7-1.sst")
	f, err := fs.Create(stale, "test")
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	openTest(t, testConfig(fs))
	if _, err := fs.Stat(stale); err == nil {
		t.Fatal("stale snapshot table survived the open")
	}
}

// TestStagedSnapshotsRemoved: a crash in the middle of receiving a
// snapshot, or before its install, leaves its staged table behind; the
// next open removes it. A staged snapshot that is discarded (a broken
// stream, one raft did not take) removes its own table at once.
func TestStagedSnapshotsRemoved(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openTest(t, testConfig(fs))
	g := createGroup(t, s, 1, 1)
	staging := fs.PathJoin("db", StagingDir)
	list := func(fs vfs.FS) []string { names, _ := fs.List(staging); return names }

	discarded, err := g.StageSnapshot(10)
	if err != nil {
		t.Fatal(err)
	}
	if err := discarded.Put([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if len(list(fs)) != 1 {
		t.Fatalf("staging holds %v, want the table being written", list(fs))
	}
	discarded.Discard()
	if len(list(fs)) != 0 {
		t.Fatalf("a discarded staged snapshot left %v", list(fs))
	}

	half, err := g.StageSnapshot(10) // a stream still arriving
	if err != nil {
		t.Fatal(err)
	}
	defer half.Discard() // its writer, after the crash
	_ = half.Put([]byte("a"), []byte("1"))
	whole, err := g.StageSnapshot(10) // one arrived, not installed yet
	if err != nil {
		t.Fatal(err)
	}
	_ = whole.Put([]byte("b"), []byte("2"))
	if err := whole.Finish(); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
	if n := len(list(crashed)); n == 0 {
		t.Fatal("the crash left no staged table: the test proves nothing")
	}
	openTest(t, testConfig(crashed))
	if left := list(crashed); len(left) != 0 {
		t.Fatalf("staged tables survived the open: %v", left)
	}
}

// TestCrashBetweenSnapshotAndEntries: raft hands a snapshot and the
// entries after it (with a commit index among them) in one append; the
// snapshot is ingested durably first, the entries follow in a later synced
// batch. A power cut between the two must leave a commit index the log
// covers, or raft refuses to start ("state.commit is out of range").
func TestCrashBetweenSnapshotAndEntries(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openTest(t, testConfig(fs))
	g, err := s.CreateGroup(1, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	applied := AppliedState{Index: 40, Term: 7, ConfState: &pb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}},
		Replicas: map[uint64]uint64{1: 1, 2: 2, 3: 3}, NextReplicaID: 4}
	// The append's hard state commits entries after the snapshot.
	if err := g.InstallSnapshot(t.Context(), applied, hardState(7, 0, 45), func(*SnapshotWriter) error { return nil }); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, testConfig(fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})))
	g2, ok := s2.Group(1)
	if !ok {
		t.Fatal("group lost")
	}
	last, _ := g2.LastIndex()
	if hs := g2.HardState(); hs.GetCommit() > last || hs.GetCommit() < applied.Index {
		t.Fatalf("after a crash between a snapshot and its entries: commit %d, log ends at %d, snapshot at %d",
			hs.GetCommit(), last, applied.Index)
	}
	rn, err := raft.NewRawNode(&raft.Config{ID: 3, ElectionTick: 10, HeartbeatTick: 1, Storage: g2, Applied: applied.Index,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, AsyncStorageWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	if st := rn.BasicStatus(); st.GetCommit() != applied.Index {
		t.Fatalf("raft restarted with commit %d, want the snapshot's %d", st.GetCommit(), applied.Index)
	}
}
