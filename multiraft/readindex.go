package multiraft

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/flotilla-io/flotilla/scheduler"
)

// A read waits until this host's state machine reflects every write
// acknowledged before it began: raft's ReadIndex gives the commit index as
// of a moment the leader was confirmed (its heartbeat round carries the
// read's context), and the read completes once this host has applied up
// to it. Contexts are unique per host incarnation (a boot nonce plus a
// counter), so a reply meant for an older request can never complete a
// newer one; a request that hears nothing for an election timeout (a lost
// message, a leader change) is issued again with a fresh context.
type readRequest struct {
	caller context.Context
	ctx    string // raft request context
	done   chan error
	index  uint64 // the read index, once known
	issued uint64 // group tick count when the context was issued
	// finished is set once the read is answered (by the group's owner).
	finished bool
	fn       func() error // Read's function, run on the worker; nil for ReadIndex
	stale    bool         // StaleRead: answered at once, no ReadIndex
	// state decides, for a read with a function, between the worker
	// running it and the caller giving up: whoever moves it from
	// readPending first wins, so the function runs if and only if its
	// caller gets its answer.
	state atomic.Int32
}

const (
	readPending   int32 = iota
	readRunning         // the worker runs (or ran) the function
	readAbandoned       // the caller left first
)

// ReadIndex returns once this host's state machine of the group reflects
// every write acknowledged before the call began. It works on followers
// too (raft forwards the request to the leader); with no leader known it
// fails at once with a *NotLeaderError. A group has at most
// MaxGroupProposals reads waiting; beyond them ReadIndex is ErrBusy.
//
// The state machine may have applied more by the time the caller reads
// it, and Apply may be running then: Read runs the read where it cannot
// race Apply.
func (h *Host) ReadIndex(ctx context.Context, groupID GroupID) error {
	return h.read(ctx, groupID, nil, false)
}

// Read is a linearizable read: it runs fn once this host's state machine
// of the group reflects every write acknowledged before Read was called
// (as ReadIndex waits), on the group's worker between two Apply calls. fn
// reads the state machine the caller holds (from its factory) with no
// lock of its own: nothing applies while it runs. fn must be quick (the
// group waits for it) and must not call the host; it runs at most once,
// and not at all if Read fails first. Read returns fn's error. It works
// on followers and has ReadIndex's errors and bounds.
func (h *Host) Read(ctx context.Context, groupID GroupID, fn func() error) error {
	if fn == nil {
		return fmt.Errorf("%w: Read without a function", ErrInvalid)
	}
	return h.read(ctx, groupID, fn, false)
}

// StaleRead runs fn like Read, on the group's worker between two Apply
// calls, but at once: it asks no leader, so fn sees this replica's state
// as applied so far, which may lack writes acknowledged elsewhere (far
// behind, on a replica cut off from its group). It works on any replica,
// with or without a leader, for callers who accept stale state in
// exchange for no round trip.
func (h *Host) StaleRead(ctx context.Context, groupID GroupID, fn func() error) error {
	if fn == nil {
		return fmt.Errorf("%w: StaleRead without a function", ErrInvalid)
	}
	return h.read(ctx, groupID, fn, true)
}

func (h *Host) read(ctx context.Context, groupID GroupID, fn func() error, stale bool) error {
	if err := h.usable(); err != nil {
		return err
	}
	g := h.group(groupID)
	if g == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if !stale && !g.serving.Load() && g.leaderNode.Load() == 0 {
		// No leader to confirm the read: fail now, as Propose does,
		// rather than wait for the caller's deadline.
		if err := g.closed(); err != nil {
			return err
		}
		return &NotLeaderError{GroupID: groupID}
	}
	r := &readRequest{caller: ctx, done: make(chan error, 1), fn: fn, stale: stale}
	g.mu.Lock()
	if err := g.admitLocked(g.mu.readCount, "read"); err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.reads = append(g.mu.reads, r)
	g.mu.readCount++
	g.mu.Unlock()
	h.readsWaiting.Inc()
	h.sched.Enqueue(g.id, scheduler.Requests)
	start := time.Now()
	select {
	case err := <-r.done:
		if err == nil && !stale {
			h.m.ReadIndexDuration.Observe(time.Since(start).Seconds())
		}
		return err
	case <-ctx.Done():
		if fn != nil && !r.state.CompareAndSwap(readPending, readAbandoned) {
			return <-r.done // the worker runs the function: its answer is this read's
		}
		// The worker forgets the read on its next pass: let it be soon, so
		// the read stops counting against the group's bound.
		h.sched.Enqueue(g.id, scheduler.Requests)
		return fmt.Errorf("multiraft: read of group %d: %w", groupID, ctx.Err())
	}
}

// finishRead answers a read once; later calls do nothing.
func (g *group) finishRead(r *readRequest, err error) {
	if r.finished {
		return
	}
	r.finished = true
	if err == nil && r.fn != nil {
		if !r.state.CompareAndSwap(readPending, readRunning) {
			err = fmt.Errorf("multiraft: read of group %d: %w", g.id, context.Canceled) // its caller left: not run
		} else {
			err = g.runRead(r.fn)
		}
	}
	r.done <- err
	g.mu.Lock()
	g.mu.readCount--
	g.mu.Unlock()
	g.h.readsWaiting.Dec()
}

// runRead runs a read function on the worker; a panic in it is the
// read's error, not the group's failure.
func (g *group) runRead(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("multiraft: read of group %d panicked: %v", g.id, p)
		}
	}()
	return fn()
}

// newReadContext returns a context unique to this host incarnation.
func (h *Host) newReadContext() string {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, h.bootNonce)
	b = binary.BigEndian.AppendUint64(b, h.nextRead.Add(1))
	return string(b)
}

// issueReads hands new reads to raft.
func (g *group) issueReads(rs []*readRequest) {
	for _, r := range rs {
		if err := r.caller.Err(); err != nil {
			g.finishRead(r, err)
			continue
		}
		if r.stale {
			g.finishRead(r, nil)
			continue
		}
		g.issueRead(r)
	}
}

func (g *group) issueRead(r *readRequest) {
	if r.ctx != "" {
		delete(g.reads, r.ctx)
	}
	r.ctx = g.h.newReadContext()
	r.issued = g.ticks
	if g.reads == nil {
		g.reads = make(map[string]*readRequest)
	}
	g.reads[r.ctx] = r
	g.rn.ReadIndex([]byte(r.ctx))
}

// retryReads issues again, with fresh contexts, the reads that have heard
// nothing for an election timeout, and forgets those whose caller left.
func (g *group) retryReads() {
	for ctx, r := range g.reads {
		switch {
		case r.caller.Err() != nil:
			delete(g.reads, ctx)
			g.finishRead(r, r.caller.Err())
		case r.index == 0 && g.ticks-r.issued >= uint64(g.h.cfg.ElectionTicks):
			g.issueRead(r)
		}
	}
}

// readStates matches raft's answers to waiting reads.
func (g *group) readStates(indexes map[string]uint64) {
	for ctx, index := range indexes {
		if r, ok := g.reads[ctx]; ok && r.index == 0 {
			r.index = index
		}
	}
	g.releaseReads()
}

// releaseReads completes the reads whose index this host has applied.
func (g *group) releaseReads() {
	for ctx, r := range g.reads {
		if r.index != 0 && r.index <= g.applied {
			delete(g.reads, ctx)
			g.finishRead(r, nil)
		}
	}
}
