package store

import (
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
