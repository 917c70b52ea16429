package store

import (
	"runtime"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestReviewTrimmedRunKeepsItsArray (review, issue 16): since 249f78d
// trimFrontLocked drops a run's head in place, so a run that the log's
// truncation cut down to a few entries keeps the whole backing array it
// grew to (one pointer slot per entry it ever held at once) for as long as
// it stays cached; only an append that outgrows the array frees it, and an
// idle group never appends. That memory is outside the cache's budget.
//
// Scenario: 16 groups (one per shard, default 64 MiB budget) each take
// 50,000 small entries (a burst, or a catch-up), then their logs are
// truncated down to their last entry and they go idle. The cache accounts
// 16 entries (about 1.3 KB); the heap keeps the 16 arrays (~6-8 MB).
func TestReviewTrimmedRunKeepsItsArray(t *testing.T) {
	const (
		groups  = cacheShards
		perRun  = 50_000
		perAdd  = 16
		maxHeld = 1 << 20 // what 16 one-entry runs may reasonably cost
	)
	var accounted int64
	m := noCacheMetrics()
	m.bytes = func(d int64) { accounted += d }

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c := newEntryCache(64<<20, m)
	for g := uint64(1); g <= groups; g++ {
		for lo := uint64(1); lo <= perRun; lo += perAdd {
			batch := make([]*pb.Entry, 0, perAdd)
			for i := lo; i < lo+perAdd; i++ {
				batch = append(batch, &pb.Entry{Index: new(i), Term: new(uint64(1)), Data: make([]byte, 16)})
			}
			c.add(g, batch)
		}
		last := uint64(perRun/perAdd) * perAdd
		c.truncateBelow(g, last) // the log truncated: one entry left
		if got := cachedIndexes(c, g, last, last+1); len(got) != 1 {
			t.Fatalf("group %d: cached %v after truncation, want [%d]", g, got, last)
		}
	}

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(c)

	t.Logf("cache accounts %d bytes for %d entries; heap holds %d bytes more than before", accounted, groups, held)
	if held > maxHeld {
		t.Fatalf("%d one-entry runs pin %d bytes of heap (budgeted: %d): trimmed heads keep their backing arrays",
			groups, held, accounted)
	}
}
