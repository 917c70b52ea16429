package store

import (
	"slices"
	"sync"

	pb "go.etcd.io/raft/v3/raftpb"
)

// entryCache keeps recent log entries of every group under one global byte
// budget, so that raft's reads of entries it just wrote (to send them to
// followers, or to apply them) do not go to Pebble.
//
// The cache holds, per group, one contiguous run of entries. It is split into
// shards by group ID, each with an equal part of the budget and its own
// lock and LRU list of runs; a shard over budget evicts whole runs, least
// recently used first, and then the oldest entries of the run it just grew.
//
// Entries are shared, never copied: raft's contract is that nobody mutates
// an entry once it has been handed to storage.
//
// The cache mirrors what Pebble shows: the log writer removes entries from
// it before a batch that overwrites or deletes them is applied, and adds
// entries after the batch that wrote them is applied.
type entryCache struct {
	shards  [cacheShards]cacheShard
	metrics cacheMetrics
}

// cacheMetrics is what the cache reports; the store points these at its
// Prometheus collectors.
type cacheMetrics struct {
	hit, miss func()
	bytes     func(delta int64)
}

const (
	cacheShards = 16
	// entryOverhead approximates the memory of an entry besides its payload.
	entryOverhead = 64
)

type cacheShard struct {
	mu struct {
		sync.Mutex
		budget int64
		bytes  int64
		runs   map[uint64]*cacheRun
		// lru is a sentinel of a circular list of runs: lru.next is the most
		// recently used run, lru.prev the least.
		lru cacheRun
	}
}

type cacheRun struct {
	groupID    uint64
	first      uint64 // index of ents[0]
	ents       []*pb.Entry
	bytes      int64
	prev, next *cacheRun
	// dead counts the slots before ents[0] in its backing array (heads
	// dropped in place): once they outnumber the live ones, the run moves
	// to an array of its size (see compactLocked).
	dead int
}

// compactLocked moves a run to a backing array of its own size once
// trims left most of its array dead: a run cut down from a burst (a
// catch-up, then truncation, then idle) must not pin the array it grew to,
// which the budget does not count. Amortized, each dropped entry pays
// for about one copied.
func (r *cacheRun) compactLocked() {
	if r.dead > len(r.ents)+minDeadSlots || cap(r.ents) > 4*len(r.ents)+minDeadSlots {
		r.ents = slices.Clone(r.ents)
		r.dead = 0
	}
}

// minDeadSlots is the dead array a run may keep regardless (a small run
// is not copied at every trim).
const minDeadSlots = 64

func newEntryCache(budget int64, m cacheMetrics) *entryCache {
	c := &entryCache{metrics: m}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.budget = budget / cacheShards
		s.mu.runs = make(map[uint64]*cacheRun)
		s.mu.lru.next, s.mu.lru.prev = &s.mu.lru, &s.mu.lru
	}
	return c
}

func (c *entryCache) shard(groupID uint64) *cacheShard {
	return &c.shards[groupID%cacheShards]
}

func cachedSize(e *pb.Entry) int64 { return int64(len(e.Data)) + entryOverhead }

// add caches ents (contiguous, ascending). Entries of the group at or above
// ents[0]'s index are replaced; a run that does not touch ents is dropped.
func (c *entryCache) add(groupID uint64, ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	s := c.shard(groupID)
	s.mu.Lock()
	before := s.mu.bytes
	first := ents[0].GetIndex()
	r := s.mu.runs[groupID]
	if r != nil && (first < r.first || first > r.first+uint64(len(r.ents))) {
		s.removeRunLocked(r)
		r = nil
	}
	if r == nil {
		r = &cacheRun{groupID: groupID, first: first}
		s.mu.runs[groupID] = r
	} else {
		s.truncateRunLocked(r, first)
		s.unlinkLocked(r)
	}
	s.linkFrontLocked(r)
	for _, e := range ents {
		sz := cachedSize(e)
		r.bytes += sz
		s.mu.bytes += sz
	}
	if oldCap := cap(r.ents); len(r.ents)+len(ents) > oldCap {
		r.dead = 0 // the append moves the run to a new array
	}
	r.ents = append(r.ents, ents...)
	s.evictLocked(r)
	delta := s.mu.bytes - before
	s.mu.Unlock()
	c.metrics.bytes(delta)
}

// get appends to dst the cached entries [lo, hi) of the group, stopping at
// the first index it does not hold or once maxSize would be exceeded (at
// least one entry is returned if lo is cached). It returns dst, the size of
// what it appended, and full: whether it stopped because of maxSize.
func (c *entryCache) get(groupID, lo, hi, maxSize uint64, dst []*pb.Entry) (_ []*pb.Entry, size uint64, full bool) {
	s := c.shard(groupID)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mu.runs[groupID]
	if r == nil || lo < r.first || lo >= r.first+uint64(len(r.ents)) {
		return dst, 0, false
	}
	s.unlinkLocked(r)
	s.linkFrontLocked(r)
	for i := lo; i < hi && i < r.first+uint64(len(r.ents)); i++ {
		e := r.ents[i-r.first]
		sz := entrySize(e)
		if size > 0 && size+sz > maxSize {
			return dst, size, true
		}
		size += sz
		dst = append(dst, e)
	}
	return dst, size, false
}

// term returns the term of the entry at index if it is cached.
func (c *entryCache) term(groupID, index uint64) (uint64, bool) {
	s := c.shard(groupID)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mu.runs[groupID]
	if r == nil || index < r.first || index >= r.first+uint64(len(r.ents)) {
		return 0, false
	}
	return r.ents[index-r.first].GetTerm(), true
}

// truncateFrom drops the group's entries at or above index.
func (c *entryCache) truncateFrom(groupID, index uint64) {
	c.update(groupID, func(s *cacheShard, r *cacheRun) { s.truncateRunLocked(r, index) })
}

// truncateBelow drops the group's entries below index.
func (c *entryCache) truncateBelow(groupID, index uint64) {
	c.update(groupID, func(s *cacheShard, r *cacheRun) { s.trimFrontLocked(r, index) })
}

// drop forgets every entry of the group.
func (c *entryCache) drop(groupID uint64) {
	c.update(groupID, func(s *cacheShard, r *cacheRun) { s.removeRunLocked(r) })
}

func (c *entryCache) update(groupID uint64, fn func(*cacheShard, *cacheRun)) {
	s := c.shard(groupID)
	s.mu.Lock()
	before := s.mu.bytes
	if r := s.mu.runs[groupID]; r != nil {
		fn(s, r)
		if len(r.ents) == 0 {
			s.removeRunLocked(r)
		}
	}
	delta := s.mu.bytes - before
	s.mu.Unlock()
	if delta != 0 {
		c.metrics.bytes(delta)
	}
}

func (s *cacheShard) truncateRunLocked(r *cacheRun, index uint64) {
	if index < r.first {
		index = r.first
	}
	end := r.first + uint64(len(r.ents))
	if index >= end {
		return
	}
	keep := int(index - r.first)
	for _, e := range r.ents[keep:] {
		sz := cachedSize(e)
		r.bytes -= sz
		s.mu.bytes -= sz
	}
	clear(r.ents[keep:]) // let the dropped entries be collected
	r.ents = r.ents[:keep]
	r.compactLocked()
}

func (s *cacheShard) trimFrontLocked(r *cacheRun, index uint64) {
	if index <= r.first {
		return
	}
	n := min(int(index-r.first), len(r.ents))
	for _, e := range r.ents[:n] {
		sz := cachedSize(e)
		r.bytes -= sz
		s.mu.bytes -= sz
	}
	// Drop the head in place (a copy of the survivors at every trim cost
	// O(run) per append once the cache was full): the dropped entries are
	// cleared so they can be collected, and the backing array goes when an
	// append outgrows what is left of it.
	clear(r.ents[:n])
	r.ents = r.ents[n:]
	r.first += uint64(n)
	r.dead += n
	r.compactLocked()
}

func (s *cacheShard) removeRunLocked(r *cacheRun) {
	s.mu.bytes -= r.bytes
	s.unlinkLocked(r)
	delete(s.mu.runs, r.groupID)
}

// evictLocked brings the shard under budget: whole runs from the cold end
// first, then the oldest entries of keep (the run being added to).
func (s *cacheShard) evictLocked(keep *cacheRun) {
	for s.mu.bytes > s.mu.budget {
		victim := s.mu.lru.prev
		if victim == keep || victim == &s.mu.lru {
			break
		}
		s.removeRunLocked(victim)
	}
	if s.mu.bytes <= s.mu.budget {
		return
	}
	n := 0
	over := s.mu.bytes - s.mu.budget
	for n < len(keep.ents) && over > 0 {
		over -= cachedSize(keep.ents[n])
		n++
	}
	s.trimFrontLocked(keep, keep.first+uint64(n))
	if len(keep.ents) == 0 {
		s.removeRunLocked(keep)
	}
}

func (s *cacheShard) unlinkLocked(r *cacheRun) {
	if r.prev != nil {
		r.prev.next, r.next.prev = r.next, r.prev
		r.prev, r.next = nil, nil
	}
}

func (s *cacheShard) linkFrontLocked(r *cacheRun) {
	r.prev, r.next = &s.mu.lru, s.mu.lru.next
	s.mu.lru.next.prev = r
	s.mu.lru.next = r
}
