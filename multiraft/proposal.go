package multiraft

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// A proposal waits on the host that made it until its entry applies (or
// its fate is otherwise known). Proposals of one group queued between two
// worker passes are packed into one Raft entry:
//
//	0x01 count:uvarint (id:uvarint len:uvarint data)...
//
// so a busy group writes a few large entries, not many small ones. The IDs
// let the host match applied commands to its waiting proposals; they start
// from a random base per host incarnation so an entry proposed before a
// restart never matches a proposal made after it.
type proposal struct {
	id    uint64
	data  []byte
	start time.Time
	done  chan proposalResult // capacity 1: completion never blocks a worker
	// finished is set by the first finish.
	finished atomic.Bool
	// h and charged: the bytes of the host's proposal budget the proposal
	// holds until it is finished (none if h is nil).
	h       *Host
	charged int64

	// Set by the worker that owns the group once the entry is in the log.
	index uint64
	// replicas is the membership a conf change left, for ChangeMembership.
	replicas map[uint64]uint64
	noop     bool // a membership change that had nothing to change
}

type proposalResult struct {
	Result
	replicas map[uint64]uint64
	noop     bool
	err      error
}

// Result is what Propose returns on success: the state machine's result
// and the command's position in the log.
type Result struct {
	Index uint64
	Slot  int
	Value []byte
}

const entryBatchMagic byte = 0x01

// release returns the proposal's bytes to the host's budget.
func (p *proposal) release() {
	if p.h != nil && p.charged > 0 {
		p.h.proposalBytes.Add(-p.charged)
		p.h.m.ProposalBytes.Sub(float64(p.charged))
		p.h.inFlight.Add(-1)
		p.h.m.ProposalsInFlight.Dec()
	}
}

// finish completes the proposal once; later calls do nothing (the
// caller may have taken the first answer already: only the flag tells).
func (p *proposal) finish(r Result, err error) {
	if p.finished.Swap(true) {
		return
	}
	p.done <- proposalResult{Result: r, replicas: p.replicas, noop: p.noop, err: err}
	p.release()
}

// encodeBatch packs proposals into one entry's data.
func encodeBatch(ps []*proposal) []byte {
	size := 1 + binary.MaxVarintLen64
	for _, p := range ps {
		size += 2*binary.MaxVarintLen64 + len(p.data)
	}
	b := make([]byte, 0, size)
	b = append(b, entryBatchMagic)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.AppendUvarint(b, p.id)
		b = binary.AppendUvarint(b, uint64(len(p.data)))
		b = append(b, p.data...)
	}
	return b
}

// batchLen returns the number of proposals an entry's batch says it
// holds, bounded by what its bytes could hold (each takes at least two):
// a sizing hint, not a check.
func batchLen(b []byte) int {
	if len(b) < 2 || b[0] != entryBatchMagic {
		return 0
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return 0
	}
	return int(min(n, uint64(len(b)/2)))
}

// decodeBatch calls fn for each (id, data) of an entry. The data slices
// alias the entry.
func decodeBatch(b []byte, fn func(slot int, id uint64, data []byte)) error {
	if len(b) == 0 || b[0] != entryBatchMagic {
		return fmt.Errorf("multiraft: entry is not a proposal batch")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return fmt.Errorf("multiraft: bad proposal batch count")
	}
	b = b[k:]
	for slot := 0; slot < int(n); slot++ {
		id, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return fmt.Errorf("multiraft: bad proposal id")
		}
		l, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 || l > uint64(len(b)-k1-k2) {
			return fmt.Errorf("multiraft: bad proposal length")
		}
		start := k1 + k2
		fn(slot, id, b[start:start+int(l):start+int(l)])
		b = b[start+int(l):]
	}
	if len(b) != 0 {
		return fmt.Errorf("multiraft: trailing bytes in proposal batch")
	}
	return nil
}

// addPending notes a proposal handed to raft (the map is made on first
// use: an idle group has none).
func (g *group) addPending(p *proposal) {
	if g.pending == nil {
		g.pending = make(map[uint64]*proposal)
	}
	g.pending[p.id] = p
}
