package store

import (
	"runtime"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

func noCacheMetrics() cacheMetrics {
	return cacheMetrics{hit: func() {}, miss: func() {}, bytes: func(int64) {}}
}

func cachedIndexes(c *entryCache, groupID, lo, hi uint64) []uint64 {
	es, _, _ := c.get(groupID, lo, hi, 1<<30, nil)
	var out []uint64
	for _, e := range es {
		out = append(out, e.GetIndex())
	}
	return out
}

func TestEntryCache(t *testing.T) {
	var bytes int64
	m := noCacheMetrics()
	m.bytes = func(d int64) { bytes += d }
	c := newEntryCache(1<<20, m)
	c.add(1, ents(11, 21, 6))
	if got := cachedIndexes(c, 1, 11, 21); len(got) != 10 {
		t.Fatalf("cached %v", got)
	}
	// A miss at lo returns nothing, even if later indexes are cached.
	if got := cachedIndexes(c, 1, 5, 15); len(got) != 0 {
		t.Fatalf("served %v for a range starting below the run", got)
	}
	// Overwriting the tail replaces it and drops what lies above.
	c.add(1, ents(15, 17, 7))
	if got := cachedIndexes(c, 1, 11, 21); len(got) != 6 || got[5] != 16 {
		t.Fatalf("after overwrite: %v", got)
	}
	if term, ok := c.term(1, 15); !ok || term != 7 {
		t.Fatalf("term(15) = %d %t", term, ok)
	}
	if _, ok := c.term(1, 17); ok {
		t.Fatal("stale entry 17 still cached")
	}
	// A run that does not touch the cached one replaces it.
	c.add(1, ents(30, 32, 7))
	if got := cachedIndexes(c, 1, 11, 40); len(got) != 0 {
		t.Fatalf("old run survived a disjoint add: %v", got)
	}
	c.truncateBelow(1, 31)
	if got := cachedIndexes(c, 1, 31, 40); len(got) != 1 {
		t.Fatalf("after truncateBelow: %v", got)
	}
	c.truncateFrom(1, 31)
	c.drop(2) // unknown group: nothing happens
	if bytes != 0 {
		t.Fatalf("%d bytes accounted after emptying the cache", bytes)
	}
	// maxSize: at least one entry, then stop before exceeding it.
	c.add(3, ents(1, 5, 1))
	if es, _, full := c.get(3, 1, 5, 1, nil); len(es) != 1 || !full {
		t.Fatalf("maxSize 1 gave %d entries", len(es))
	}
}

// TestEntryCacheBudget: the byte budget holds across many groups, the
// least recently used runs go first, and a hot run alone over budget loses
// its oldest entries.
func TestEntryCacheBudget(t *testing.T) {
	var bytes int64
	m := noCacheMetrics()
	m.bytes = func(d int64) { bytes += d }
	const budget = cacheShards * 4096
	c := newEntryCache(budget, m)
	big := func(lo, hi uint64) []*pb.Entry {
		out := ents(lo, hi, 1)
		for _, e := range out {
			e.Data = make([]byte, 200)
		}
		return out
	}
	for g := uint64(0); g < 1000; g++ {
		c.add(g, big(1, 4))
		if bytes > budget {
			t.Fatalf("after group %d: %d bytes cached, budget %d", g, bytes, budget)
		}
	}
	// The most recent groups of each shard are still there, the oldest not.
	if got := cachedIndexes(c, 999, 1, 4); len(got) != 3 {
		t.Fatalf("most recent group lost: %v", got)
	}
	if got := cachedIndexes(c, 0, 1, 4); len(got) != 0 {
		t.Fatalf("oldest group survived: %v", got)
	}
	// One group far over its shard's budget keeps its newest entries.
	c.add(5000, big(1, 200))
	got := cachedIndexes(c, 5000, 1, 200)
	if _, ok := c.term(5000, 199); !ok || len(got) != 0 {
		t.Fatalf("hot run: newest cached %t, oldest served %v", ok, got)
	}
	if bytes > budget {
		t.Fatalf("%d bytes cached, budget %d", bytes, budget)
	}
}

// TestTrimmedRunFreesItsArray (from a review): a run's head is dropped in
// place, so a run that the log's truncation cut down to a few entries
// would keep the whole backing array it grew to (one pointer slot per
// entry it ever held at once), outside the cache's budget, for as long as
// it stays cached: an idle group never appends to move it. It moves to an
// array of its size once most of its array is dead.
//
// Scenario: 16 groups (one per shard, default 64 MiB budget) each take
// 50,000 small entries (a burst, or a catch-up), then their logs are
// truncated down to their last entry and they go idle. The cache accounts
// 16 entries (about 1.3 KB); the heap keeps the 16 arrays (~6-8 MB).
func TestTrimmedRunFreesItsArray(t *testing.T) {
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
