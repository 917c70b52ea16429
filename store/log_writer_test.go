package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"
)

// blockingSyncFS holds WAL syncs while held is set.
type blockingSyncFS struct {
	held    atomic.Bool
	waiting atomic.Int32
	release chan struct{}
	once    *sync.Once
}

// unblock lets held syncs go on. Tests also defer it so that a failing
// test does not leave the store's Close waiting on a held sync.
func (b *blockingSyncFS) unblock() {
	b.held.Store(false)
	b.once.Do(func() { close(b.release) })
}

func (b *blockingSyncFS) wrap(fs vfs.FS) vfs.FS {
	b.release = make(chan struct{})
	b.once = new(sync.Once)
	return errorfs.Wrap(fs, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if b.held.Load() && isWALSync(op) {
			b.waiting.Add(1)
			<-b.release
		}
		return nil
	}))
}

// TestOneSyncForManyGroups: appends of many groups that arrive while a sync
// is in progress share the next batch and its one sync, and completions run
// only after it, in per-group FIFO order.
func TestOneSyncForManyGroups(t *testing.T) {
	var bfs blockingSyncFS
	cfg := testConfig(bfs.wrap(vfs.NewMem()))
	s := openTest(t, cfg)
	t.Cleanup(bfs.unblock)
	const numGroups = 100
	groups := make([]*GroupStorage, numGroups)
	for i := range groups {
		groups[i] = createGroup(t, s, uint64(i+1), 1)
	}
	// Hold the WAL: the first append's batch blocks in its sync, and
	// everything queued meanwhile must wait for the next batch.
	bfs.held.Store(true)
	var order [numGroups][]uint64
	var mu sync.Mutex
	var completed atomic.Int32
	appendOne := func(g *GroupStorage, i int, index uint64) {
		if err := g.Append(ents(index, index+1, 6), nil, func() {
			mu.Lock()
			order[i] = append(order[i], index)
			mu.Unlock()
			completed.Add(1)
		}); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(groups[0], 0, 11)
	waitFor(t, 10*time.Second, "the first batch to reach its sync", func() bool { return bfs.waiting.Load() > 0 })
	batchesBefore := testutil.ToFloat64(s.m.WriterBatches)
	for i, g := range groups {
		for index := uint64(11); index < 14; index++ {
			if i == 0 && index == 11 {
				continue
			}
			appendOne(g, i, index)
		}
	}
	if n := completed.Load(); n != 0 {
		t.Fatalf("%d completions ran before any sync returned", n)
	}
	bfs.unblock()
	waitFor(t, 10*time.Second, "every append to complete", func() bool { return completed.Load() == 3*numGroups })
	// While the first batch is held in its sync, the pipeline can hold two
	// more (one handed to the syncer, one being handed); whatever is left
	// goes in one batch after the release. So at most 4 synced batches
	// carry all 300 appends, where one sync per append would take 300.
	if batches := testutil.ToFloat64(s.m.WriterBatches) - batchesBefore; batches > 4 {
		t.Fatalf("300 appends of 100 groups took %.0f synced batches, want at most 4", batches)
	}
	for i := range groups {
		if got := order[i]; len(got) != 3 || got[0] != 11 || got[1] != 12 || got[2] != 13 {
			t.Fatalf("group %d completions ran in order %v", i+1, got)
		}
	}
}

// TestWriterBounds: a batch respects MaxBatchItems, and a full queue
// refuses new items with ErrBusy (and counts them) instead of growing.
func TestWriterBounds(t *testing.T) {
	var bfs blockingSyncFS
	cfg := testConfig(bfs.wrap(vfs.NewMem()))
	cfg.MaxBatchItems = 8
	cfg.MaxQueueItems = 32
	cfg.MaxBatchBytes = 1 << 20
	cfg.MaxQueueBytes = 4 << 20
	s := openTest(t, cfg)
	t.Cleanup(bfs.unblock)
	g := createGroup(t, s, 1, 1)
	g2 := createGroup(t, s, 2, 1)
	bfs.held.Store(true)
	var completed atomic.Int32
	done := func() { completed.Add(1) }
	if err := g.Append(ents(11, 12, 6), nil, done); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first batch to reach its sync", func() bool { return bfs.waiting.Load() > 0 })
	// The batcher may take two more batches (8 items each) into the
	// pipeline while the first one syncs; beyond that the queue holds 32.
	next := uint64(12)
	var busy error
	for i := 0; i < 100 && busy == nil; i++ {
		if busy = g.Append(ents(next, next+1, 6), nil, done); busy == nil {
			next++
		}
	}
	if !errors.Is(busy, ErrBusy) {
		t.Fatalf("queue never refused an item: %v", busy)
	}
	if queued := next - 12; queued < 32 || queued > 32+16 {
		t.Fatalf("%d items accepted before ErrBusy, want 32 to 48", queued)
	}
	if testutil.ToFloat64(s.m.WriterRejected) != 1 {
		t.Fatal("rejection not counted")
	}
	if q := testutil.ToFloat64(s.m.WriterQueueItems); q < 32-16 || q > 32 {
		t.Fatalf("queue gauge %v, want 16 to 32 (%d accepted, %v)", q, next-12, busy)
	}
	// A removal is taken even so: a replica that applied its own removal
	// has nowhere else to go.
	removed := make(chan error, 1)
	go func() { removed <- s.RemoveGroup(2, 2) }()
	waitFor(t, 10*time.Second, "the removal to be queued", func() bool { return g2.isRemoving() || len(removed) > 0 })
	bfs.unblock()
	if err := <-removed; err != nil {
		t.Fatalf("removal with a full queue: %v", err)
	}
	waitFor(t, 10*time.Second, "the queue to drain", func() bool { return completed.Load() == int32(next-11) })
	if _, ok := s.Group(2); ok {
		t.Fatal("group 2 still hosted after its removal")
	}
	if q := testutil.ToFloat64(s.m.WriterQueueItems); q != 0 {
		t.Fatalf("queue gauge %v after draining", q)
	}
	// 33+ items with at most 8 per batch.
	if b := testutil.ToFloat64(s.m.WriterBatches); b < float64(next-11)/8 {
		t.Fatalf("%v batches for %d items: MaxBatchItems not honoured", b, next-11)
	}
}

// TestAppendValidation: bad input is refused with a clear error and
// changes nothing.
func TestAppendValidation(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 16, 6), nil)
	gap := []*pb.Entry{ent(16, 6), ent(18, 6)}
	for name, es := range map[string][]*pb.Entry{
		"not contiguous": gap,
		"after a gap":    ents(17, 18, 6),
		"below first":    ents(5, 12, 6),
	} {
		if err := g.Append(es, nil, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if last, _ := g.LastIndex(); last != 15 {
		t.Fatalf("last %d after refused appends", last)
	}
	if _, err := s.CreateGroup(2, 0, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("replica 0: %v", err)
	}
	if err := s.RemoveGroup(99, 2); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}
}
