package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// checkEntry verifies an entry carries the payload ent() gives its index
// and term, so an entry served under the wrong index, group or term shows.
func checkEntry(e *pb.Entry) error {
	if want := fmt.Sprintf("entry-%d-term-%d", e.GetIndex(), e.GetTerm()); string(e.GetData()) != want {
		return fmt.Errorf("entry %d/%d carries %q", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	return nil
}

// checkRun verifies a result of Entries: contiguous from lo, each entry
// sound, terms never decreasing.
func checkRun(lo uint64, es []*pb.Entry) error {
	for i, e := range es {
		if e.GetIndex() != lo+uint64(i) {
			return fmt.Errorf("entry %d at position %d of a read from %d", e.GetIndex(), i, lo)
		}
		if err := checkEntry(e); err != nil {
			return err
		}
		if i > 0 && e.GetTerm() < es[i-1].GetTerm() {
			return fmt.Errorf("term goes down at %d: %d after %d", e.GetIndex(), e.GetTerm(), es[i-1].GetTerm())
		}
	}
	return nil
}

// readers runs n goroutines calling read until stop closes; the first
// error fails the test.
func readers(t *testing.T, n int, stop <-chan struct{}, read func(rng *rand.Rand) error) (wait func()) {
	var wg sync.WaitGroup
	var reads atomic.Int64
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			// At least one read each, however early stop comes (a busy
			// machine may run the writer to its end first).
			for first := true; ; first = false {
				if !first {
					select {
					case <-stop:
						return
					default:
					}
				}
				if err := read(rng); err != nil {
					errc <- err
					return
				}
				reads.Add(1)
			}
		}()
	}
	return func() {
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if reads.Load() == 0 {
			t.Fatal("readers never read")
		}
	}
}

// TestTruncationRace: Entries and Term racing truncation answer either the
// right entries or ErrCompacted, never ErrUnavailable for an index that
// was truncated.
func TestTruncationRace(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	const last = 2000
	for lo := uint64(11); lo <= last; lo += 100 {
		appendSync(t, g, ents(lo, min(lo+100, last+1), 6), nil)
	}
	setApplied(t, g, last, 6, &pb.ConfState{Voters: []uint64{1}})
	s.cache.drop(1) // half the reads go to Pebble
	stop := make(chan struct{})
	wait := readers(t, 4, stop, func(rng *rand.Rand) error {
		lo := 11 + rng.Uint64N(last-11)
		if rng.IntN(2) == 0 {
			term, err := g.Term(lo)
			if err == nil && term != 6 {
				return fmt.Errorf("Term(%d) = %d", lo, term)
			}
			if err != nil && err != raft.ErrCompacted {
				return fmt.Errorf("Term(%d): %v", lo, err)
			}
			return nil
		}
		es, err := g.Entries(lo, min(lo+1+rng.Uint64N(50), last+1), 1<<20)
		if err == raft.ErrCompacted {
			return nil
		}
		if err != nil {
			return fmt.Errorf("Entries(%d): %v", lo, err)
		}
		return checkRun(lo, es)
	})
	for index := uint64(20); index < last; index += 7 {
		truncateSync(t, g, index)
	}
	close(stop)
	wait()
}

// TestTailOverwriteRace: after a tail overwrite completes, no stale entry
// is served, from the cache or from Pebble, and no stale key is left in
// Pebble; while it runs, every read is one consistent log.
func TestTailOverwriteRace(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 101, 6), nil)
	stop := make(chan struct{})
	wait := readers(t, 4, stop, func(rng *rand.Rand) error {
		lo := 11 + rng.Uint64N(20)
		es, err := g.Entries(lo, 101, 1<<20)
		if err == raft.ErrUnavailable {
			return nil // the log got shorter than lo
		}
		if err != nil {
			return err
		}
		return checkRun(lo, es)
	})
	last, term := uint64(100), uint64(6)
	for round := 0; round < 30; round++ {
		term++
		from := 40 + uint64(round)
		n := uint64(1 + round%7)
		appendSync(t, g, ents(from, from+n, term), nil)
		last = from + n - 1
		es, err := g.Entries(11, last+1, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkRun(11, es); err != nil {
			t.Fatal(err)
		}
		if got := es[len(es)-1]; got.GetIndex() != last || got.GetTerm() != term {
			t.Fatalf("round %d: last entry %d/%d, want %d/%d", round, got.GetIndex(), got.GetTerm(), last, term)
		}
		if _, err := g.Term(last + 1); err != raft.ErrUnavailable {
			t.Fatalf("round %d: Term(%d) after overwrite: %v", round, last+1, err)
		}
		for i := last + 1; i <= 100; i++ {
			if _, ok := s.cache.term(1, i); ok {
				t.Fatalf("round %d: stale entry %d still cached", round, i)
			}
		}
		if k := lastPebbleLogIndex(t, s, 1); k != last {
			t.Fatalf("round %d: Pebble's last log key is %d, want %d", round, k, last)
		}
	}
	close(stop)
	wait()
}

func lastPebbleLogIndex(t *testing.T, s *Store, groupID uint64) uint64 {
	t.Helper()
	_, i, err := s.logBounds(groupID)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestSnapshotInstallRace: a snapshot install swaps a group's span while
// readers read it and other groups append through the shared writer. The
// readers see the old log or ErrCompacted, the other groups' appends all
// complete, and afterwards the group reads as the snapshot.
func TestSnapshotInstallRace(t *testing.T) {
	s := newMemStore(t)
	target := createGroup(t, s, 1, 1)
	appendSync(t, target, ents(11, 301, 6), nil)
	others := make([]*GroupStorage, 4)
	for i := range others {
		others[i] = createGroup(t, s, uint64(10+i), 1)
	}
	stop := make(chan struct{})
	var installed atomic.Bool
	wait := readers(t, 3, stop, func(rng *rand.Rand) error {
		lo := 11 + rng.Uint64N(250)
		es, err := target.Entries(lo, lo+40, 1<<20)
		switch {
		case err == raft.ErrCompacted:
			return nil
		case err == raft.ErrUnavailable && installed.Load():
			return nil
		case err != nil:
			return fmt.Errorf("Entries(%d): %v", lo, err)
		}
		return checkRun(lo, es)
	})
	var wg sync.WaitGroup
	for _, o := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := uint64(11); lo < 411; lo += 10 {
				appendSync(t, o, ents(lo, lo+10, 6), nil)
			}
		}()
	}
	for round := uint64(1); round <= 5; round++ {
		applied := AppliedState{Index: 1000 * round, Term: 6 + round, ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}
		err := target.InstallSnapshot(context.Background(), applied, nil, func(w *SnapshotWriter) error {
			for k := 0; k < 100; k++ {
				if err := w.Put(fmt.Appendf(nil, "key-%03d", k), fmt.Appendf(nil, "round-%d", round)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		installed.Store(true)
		// The log continues from the snapshot.
		appendSync(t, target, ents(1000*round+1, 1000*round+6, 6+round), nil)
	}
	wg.Wait()
	close(stop)
	wait()
	for _, o := range others {
		es, err := o.Entries(11, 411, 1<<30)
		if err != nil || len(es) != 400 || checkRun(11, es) != nil {
			t.Fatalf("group %d after the installs: %d entries, %v", o.id, len(es), err)
		}
	}
	if a := target.Applied(); a.Index != 5000 || a.Term != 11 {
		t.Fatalf("applied %+v", a)
	}
	v, ok, err := target.Get([]byte("key-042"))
	if err != nil || !ok || string(v) != "round-5" {
		t.Fatalf("key-042 = %q %t %v", v, ok, err)
	}
	if es, err := target.Entries(5001, 5006, 1<<20); err != nil || len(es) != 5 {
		t.Fatalf("entries after the last install: %d, %v", len(es), err)
	}
}

// TestConcurrentGroups: hundreds of groups append (with tail overwrites and
// truncations) through the one writer while readers call Entries and Term
// on all of them. Every read is sound; at the end every log is exactly what
// its appender wrote.
func TestConcurrentGroups(t *testing.T) {
	s := newMemStore(t)
	const numGroups, appends = 200, 40
	groups := make([]*GroupStorage, numGroups)
	var wg sync.WaitGroup
	for i := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			groups[i] = createGroup(t, s, uint64(i+1), 1)
		}()
	}
	wg.Wait()
	stop := make(chan struct{})
	wait := readers(t, 4, stop, func(rng *rand.Rand) error {
		g := groups[rng.IntN(numGroups)]
		first, _ := g.FirstIndex()
		last, _ := g.LastIndex()
		if last < first {
			return nil
		}
		lo := first + rng.Uint64N(last-first+1)
		es, err := g.Entries(lo, last+1, uint64(1+rng.IntN(500)))
		if err == raft.ErrCompacted || err == raft.ErrUnavailable {
			return nil // truncated or overwritten since we looked
		}
		if err != nil {
			return fmt.Errorf("group %d Entries(%d, %d): %w", g.id, lo, last+1, err)
		}
		return checkRun(lo, es)
	})
	final := make([]uint64, numGroups)
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			next, term := uint64(11), uint64(6)
			for a := 0; a < appends; a++ {
				if a%10 == 9 && next > 13 { // overwrite the last two entries
					next -= 2
					term++
				}
				n := uint64(1 + rng.IntN(4))
				done := make(chan struct{})
				if err := g.Append(ents(next, next+n, term), nil, func() { close(done) }); err != nil {
					t.Error(err)
					return
				}
				<-done
				next += n
				if a%8 == 7 {
					setApplied(t, g, next-3, term, nil)
					if err := g.Truncate(next-3, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}
			final[i] = next - 1
		}()
	}
	wg.Wait()
	close(stop)
	wait()
	for i, g := range groups {
		if err := g.barrier(); err != nil {
			t.Fatal(err)
		}
		first, _ := g.FirstIndex()
		last, _ := g.LastIndex()
		if last != final[i] {
			t.Fatalf("group %d: last %d, appender ended at %d", g.id, last, final[i])
		}
		es, err := g.Entries(first, last+1, 1<<30)
		if err != nil || checkRun(first, es) != nil || uint64(len(es)) != last-first+1 {
			t.Fatalf("group %d: %d entries in [%d, %d]: %v", g.id, len(es), first, last, err)
		}
	}
}
