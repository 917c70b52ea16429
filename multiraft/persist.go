package multiraft

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/store"
)

// Durable snapshots of in-memory state machines, taken every
// SnapshotEntries applied entries or when asked (Host.Snapshot).
//
// A plain StateMachine writes its snapshot on the group's worker, which
// holds the group up for as long as that takes. A Snapshotter only
// captures its state there (PrepareSnapshot) and writes it on a goroutine
// of its own while the group goes on applying; the bytes come back to the
// worker, which commits them with the applied state they reflect, in one
// batch, and truncates the log behind them. One snapshot per group is in
// flight at a time; a snapshot that a restore from the leader overtook is
// dropped. Writers run at most maxSnapshotWriters at once per host; a
// group that finds none free waits in a queue, capturing nothing until
// one frees.

// maxSnapshotWriters bounds the snapshot writes running at once on a
// host (the rest wait for a slot, their groups going on meanwhile).
const maxSnapshotWriters = 2

// snapRequest is a Host.Snapshot call waiting for a durable snapshot at or
// past index.
type snapRequest struct {
	g        *group
	index    uint64 // applied here when the request was taken; 0 until then
	taken    bool
	done     chan snapAnswer // capacity 1
	answered atomic.Bool
}

// answer answers the request once; later answers are dropped (a pass
// that fails answers what it took, and the waiters it moved them to).
// Only then does the request stop counting against the group's bound,
// whether its caller still waits or not. It must not be called with g.mu
// held.
func (r *snapRequest) answer(a snapAnswer) {
	if !r.answered.Swap(true) {
		r.done <- a
		r.g.mu.Lock()
		r.g.mu.snapCount--
		r.g.mu.Unlock()
	}
}

type snapAnswer struct {
	meta SnapshotMeta
	err  error
}

// snapWritten is a Snapshotter's write, done off the worker.
type snapWritten struct {
	gen     uint64 // the group's restore generation when prepared
	applied store.AppliedState
	data    []byte
	err     error
	// panicked is what the write panicked with, if it did: the worker
	// panics with it, so the group fails alone (recoverGroup), as for a
	// panic in Apply.
	panicked any
}

// writeSnapshot runs a Snapshotter's write into memory, turning a panic
// into a value: the write runs off the worker, where nothing would catch
// it and the process would die.
func writeSnapshot(write func(io.Writer) error) (data []byte, panicked any, err error) {
	defer func() {
		if p := recover(); p != nil {
			data, panicked, err = nil, p, nil
		}
	}()
	var buf bytes.Buffer
	err = write(&buf)
	return buf.Bytes(), nil, err
}

// refusing reports whether the group takes no more work (stopped,
// removed, failed).
func (g *group) refusing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mu.refuse != nil
}

// Snapshot takes a snapshot of the group's state machine on this host now
// (not waiting for SnapshotEntries), truncates the log behind it (less
// LogTailEntries) and returns where it stands. The snapshot is committed
// to the store when Snapshot returns and synced with the host's next log
// write (the truncation queues one): a crash before that restores the
// previous snapshot and replays the log, so nothing is lost either way. An on-disk state
// machine is durable at every apply: Snapshot then only reports its
// applied index. It waits while another snapshot of the group is being
// written, and fails with the caller's context.
func (h *Host) Snapshot(ctx context.Context, groupID GroupID) (SnapshotMeta, error) {
	if err := h.usable(); err != nil {
		return SnapshotMeta{}, err
	}
	g := h.group(groupID)
	if g == nil {
		return SnapshotMeta{}, fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	r := &snapRequest{g: g, done: make(chan snapAnswer, 1)}
	g.mu.Lock()
	if err := g.admitLocked(g.mu.snapCount, "snapshot"); err != nil {
		g.mu.Unlock()
		return SnapshotMeta{}, err
	}
	g.mu.snapRequests = append(g.mu.snapRequests, r)
	g.mu.snapCount++
	g.mu.Unlock()
	h.sched.Enqueue(g.id, scheduler.Requests)
	select {
	case a := <-r.done:
		return a.meta, a.err
	case <-ctx.Done():
		return SnapshotMeta{}, fmt.Errorf("multiraft: snapshot of group %d: %w", groupID, ctx.Err())
	}
}

// takeSnapshotWork handles a pass's snapshot requests and finished writes.
func (g *group) takeSnapshotWork(reqs []*snapRequest, written []snapWritten) {
	g.snapshotDue()
	for _, w := range written {
		g.snapshotWritten(w)
	}
	for _, r := range reqs {
		r.index, r.taken = g.applied, true
		g.snapWaiters = append(g.snapWaiters, r)
	}
	if len(reqs) > 0 {
		g.startSnapshot()
	}
}

// startSnapshot begins a durable snapshot of what is applied, unless one
// is in flight (it answers what it can when it lands, then starts
// another for the rest) or nothing was applied since the last.
func (g *group) startSnapshot() {
	switch {
	case g.snapInFlight:
		return
	case g.sm.persistsApplied():
		g.diskDurable()
		g.answerSnapWaiters(nil)
		return
	case g.applied == g.durable && g.durable > 0:
		g.answerSnapWaiters(nil)
		return
	}
	s := g.sm.snapshotter()
	if s == nil {
		g.saveSnapshot(g.sm.plain())
		return
	}
	if !g.h.takeWriterSlot(g) {
		return // the group is woken when a slot frees (snapshotDue)
	}
	started := false
	defer func() {
		if !started { // an error, or a panic in PrepareSnapshot (the group fails alone): the slot goes back
			g.h.releaseWriterSlot()
		}
	}()
	applied := g.appliedState()
	write, err := s.PrepareSnapshot(g.meta())
	if err != nil {
		g.h.fail(fmt.Errorf("multiraft: group %d: snapshot state machine: %w", g.id, err))
		return
	}
	started = true
	g.snapInFlight = true
	gen, h := g.restoreGen, g.h
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		if g.refusing() { // nothing will process the group again
			h.releaseWriterSlot()
			return
		}
		data, panicked, err := writeSnapshot(write)
		h.releaseWriterSlot()
		g.mu.Lock()
		if g.mu.refuse != nil {
			g.mu.Unlock()
			return
		}
		g.mu.snapWritten = append(g.mu.snapWritten, snapWritten{gen: gen, applied: applied, data: data, err: err, panicked: panicked})
		g.mu.Unlock()
		h.sched.Enqueue(g.id, scheduler.Requests)
	}()
}

// takeWriterSlot takes one of the host's snapshot writer slots for g, or
// queues g for the next one to free (once): no goroutine and no captured
// state waits for a slot, only the group's place in the queue.
func (h *Host) takeWriterSlot(g *group) bool {
	h.writers.Lock()
	defer h.writers.Unlock()
	if h.writers.busy < maxSnapshotWriters {
		h.writers.busy++
		return true
	}
	if !g.writerQueued {
		g.writerQueued = true
		h.writers.waiting = append(h.writers.waiting, g)
	}
	return false
}

// releaseWriterSlot frees a slot and wakes the group that waited longest
// for one.
func (h *Host) releaseWriterSlot() {
	h.writers.Lock()
	h.writers.busy--
	h.writers.Unlock()
	h.wakeWriter()
}

// wakeWriter wakes the group that waited longest for a writer slot, if
// one is free, passing over groups that left (removed, failed, stopped).
// The woken group's next pass takes the slot or hands the wake on
// (snapshotDue), so a free slot never goes unnoticed while groups wait.
func (h *Host) wakeWriter() {
	h.writers.Lock()
	var next *group
	for len(h.writers.waiting) > 0 && h.writers.busy < maxSnapshotWriters {
		g := h.writers.waiting[0]
		h.writers.waiting[0] = nil
		h.writers.waiting = h.writers.waiting[1:]
		g.writerQueued = false
		if h.group(GroupID(g.id)) == g && !g.refusing() {
			// Under the lock: a group leaving the host hands the wake on
			// (passWriterWake) or is passed over here, never neither.
			g.slotFreed.Store(true)
			next = g
			break
		}
	}
	h.writers.Unlock()
	if next != nil {
		h.sched.Enqueue(next.id, scheduler.Requests)
	}
}

// passWriterWake hands a writer slot's wake to the next group in line if
// g, which is leaving the host (failed alone, or taken off it), was given
// one. It must come after g stopped being one wakeWriter chooses (it is
// refusing, or out of the host's groups): a wake either came before, and
// is seen here, or comes after, and passes g over.
func (h *Host) passWriterWake(g *group) {
	h.writers.Lock()
	woken := g.slotFreed.Swap(false)
	h.writers.Unlock()
	if woken {
		h.wakeWriter()
	}
}

// snapshotDue starts the snapshot a group queued for a writer slot, if it
// is still wanted, and hands the wake on: to the next group in line if
// this one did not take the slot.
func (g *group) snapshotDue() {
	if !g.slotFreed.Swap(false) {
		return
	}
	if len(g.snapWaiters) > 0 || g.applied >= g.durable+g.snapshotEntries() {
		g.startSnapshot()
	}
	g.h.wakeWriter() // does nothing if no slot is free
}

// snapshotWritten commits a Snapshotter's written snapshot, on the worker.
func (g *group) snapshotWritten(w snapWritten) {
	g.snapInFlight = false
	switch {
	case w.panicked != nil:
		panic(fmt.Sprintf("snapshot write: %v", w.panicked)) // the group fails alone
	case w.err != nil:
		g.h.fail(fmt.Errorf("multiraft: group %d: snapshot state machine: %w", g.id, w.err))
		return
	case w.gen != g.restoreGen || w.applied.Index <= g.durable:
		// A snapshot from the leader replaced the state since: what was
		// written is older than what is durable now.
	default:
		b := g.st.NewApplyBatch()
		b.SetStateSnapshot(w.data)
		b.SetApplied(w.applied)
		if !g.commitSnapshot(b, w.applied.Index, w.applied.Term) {
			return
		}
	}
	g.answerSnapWaiters(nil)
	if len(g.snapWaiters) > 0 {
		g.startSnapshot()
	}
}

// saveSnapshot writes a plain StateMachine's snapshot on the worker and
// commits it.
func (g *group) saveSnapshot(m StateMachine) {
	var buf bytes.Buffer
	if err := m.Snapshot(&buf); err != nil {
		g.h.fail(fmt.Errorf("multiraft: group %d: snapshot state machine: %w", g.id, err))
		return
	}
	b := g.st.NewApplyBatch()
	b.SetStateSnapshot(buf.Bytes())
	b.SetApplied(g.appliedState())
	if g.commitSnapshot(b, g.applied, g.appliedTerm) {
		g.answerSnapWaiters(nil)
	}
}

// commitSnapshot commits a durable snapshot's batch and truncates behind
// it; false if the host failed.
func (g *group) commitSnapshot(b *store.ApplyBatch, index, term uint64) bool {
	if err := b.Commit(); err != nil {
		g.h.fail(fmt.Errorf("multiraft: group %d: durable snapshot: %w", g.id, err))
		return false
	}
	g.durable = index
	g.h.emit(Event{Kind: EventSnapshotSaved, GroupID: GroupID(g.id), Index: index, Term: term})
	g.truncate()
	return true
}

// answerSnapWaiters answers the Snapshot calls the durable snapshot
// covers (all, with err).
func (g *group) answerSnapWaiters(err error) {
	meta := SnapshotMeta{GroupID: GroupID(g.id), Index: g.durable, Term: g.durableTerm()}
	n := 0
	for _, r := range g.snapWaiters {
		if err == nil && r.index > g.durable {
			g.snapWaiters[n] = r
			n++
			continue
		}
		r.answer(snapAnswer{meta: meta, err: err})
	}
	clear(g.snapWaiters[n:])
	g.snapWaiters = g.snapWaiters[:n]
}

// durableTerm is the term of the durable snapshot's index.
func (g *group) durableTerm() uint64 {
	if g.durable == g.applied {
		return g.appliedTerm
	}
	t, err := g.st.Term(g.durable)
	if err != nil {
		return 0
	}
	return t
}

// meta is where the group's applied state stands.
func (g *group) meta() SnapshotMeta {
	return SnapshotMeta{GroupID: GroupID(g.id), Index: g.applied, Term: g.appliedTerm}
}

// writeOnce runs a prepared snapshot write once, the first time its bytes
// are asked for, and keeps them (for a send: measured, then written).
type writeOnce struct {
	mu    sync.Mutex
	write func(io.Writer) error
	done  bool
	data  []byte
	err   error
}

func (w *writeOnce) bytes() ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		data, panicked, err := writeSnapshot(w.write)
		if panicked != nil {
			err = fmt.Errorf("multiraft: snapshot write panicked: %v", panicked) // the send fails, not the process
		}
		w.data, w.err, w.done, w.write = data, err, true, nil
	}
	return w.data, w.err
}
