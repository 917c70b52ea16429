package multiraft

import (
	"fmt"
	"runtime/debug"

	"go.etcd.io/raft/v3"
)

// How a group stops being processed here: the host stops (it is closed or
// has failed), the group is removed, or the group fails alone (a panic
// while stepping or applying it: raft panics on a message it cannot take,
// a state machine may panic on a command). In every case each request
// waiting on the group is answered once and gives back what it charged to
// the host's budgets (invariant 9), and the group's queues refuse new
// requests from then on, so nothing queued later waits forever.

// failWaiting fails everything that waits on the group: proposals handed
// to raft (and applied ones waiting for the local fsync) with pendingErr;
// queued proposals, membership changes, reads and transfers with
// queuedErr, which also refuses every later request. Removal requests are
// answered by answerRemovals. Only for a group no worker will step again.
func (g *group) failWaiting(pendingErr, queuedErr error) {
	g.mu.Lock()
	if g.mu.refuse == nil {
		g.mu.refuse = queuedErr
	}
	proposals, confChanges, transfers, reads := g.mu.proposals, g.mu.confChanges, g.mu.transfers, g.mu.reads
	snapRequests := g.mu.snapRequests
	g.mu.snapRequests, g.mu.snapWritten = nil, nil
	inboxBytes, controlBytes, staged := g.mu.inboxBytes, g.mu.controlBytes, g.mu.staged
	g.mu.proposals, g.mu.confChanges, g.mu.transfers, g.mu.reads = nil, nil, nil, nil
	g.mu.inbox, g.mu.inboxBox, g.mu.inboxBytes, g.mu.controlBytes, g.mu.staged, g.mu.storage, g.mu.snapReports = nil, nil, 0, 0, nil, nil, nil
	clear(g.mu.unreachable)
	g.mu.Unlock()
	g.h.releaseInbox(inboxBytes)
	g.h.releaseControl(controlBytes)
	for _, s := range staged {
		g.h.releaseStaged(s)
	}
	g.releaseStagedAll()
	g.dropBacklog()

	g.failPending(pendingErr)
	for _, a := range g.acks {
		a.p.finish(Result{}, pendingErr)
	}
	g.acks = nil
	for _, r := range g.transfers {
		g.finishTransfer(r, queuedErr)
	}
	g.transfers = nil
	for ctx, r := range g.reads {
		delete(g.reads, ctx)
		g.finishRead(r, queuedErr)
	}
	for _, p := range proposals {
		p.finish(Result{}, queuedErr)
	}
	for _, r := range confChanges {
		r.p.finish(Result{}, queuedErr)
	}
	for _, r := range transfers {
		g.finishTransfer(r, queuedErr)
	}
	for _, r := range reads {
		g.finishRead(r, queuedErr)
	}
	for _, r := range snapRequests {
		r.answer(snapAnswer{err: queuedErr})
	}
	g.answerSnapWaiters(queuedErr)
}

// answerRemovals answers the queued removal requests with err (nil: the
// group is gone) and refuses later ones with refuse.
func (g *group) answerRemovals(err, refuse error) {
	g.mu.Lock()
	removals := g.mu.remove
	g.mu.remove = nil
	if g.mu.refuseRemoval == nil {
		g.mu.refuseRemoval = refuse
	}
	g.mu.Unlock()
	for _, r := range removals {
		r <- err
	}
}

// stop answers everything waiting on a group of a host that stopped.
func (g *group) stop(err error) {
	g.failWaiting(err, err)
	g.answerRemovals(err, err)
}

// dropBacklog forgets the appends the log writer refused, returning what
// they charged to the inbox budget, and the staged snapshots they held.
func (g *group) dropBacklog() {
	for _, m := range g.appendBacklog {
		g.h.releaseInbox(appendSize(m))
	}
	g.appendBacklog = nil
	g.releaseStagedAll()
}

// recoverGroup, deferred by a pass, turns a panic in it into the failure
// of the group alone. A panic after the host failed is part of the host's
// fail-stop (a storage read error fails the store, then raft panics on
// the error it gets): the host's error tells what waits.
func (h *Host) recoverGroup(g *group) {
	in := g.pass
	g.pass = nil
	r := recover()
	if r == nil {
		if in != nil {
			in.reset() // an idle group keeps nothing of its last pass
		}
		return
	}
	if err := h.Err(); err != nil {
		h.log.Debug("group stopped by the host's failure", "group", g.id, "panic", r)
		err = fmt.Errorf("%w: %w", ErrStopped, err)
		g.stop(err)
		if in != nil {
			in.fail(g, err) // what the pass took and had not handed on
		}
		return
	}
	err := fmt.Errorf("%w: group %d: panic: %v", ErrGroupFailed, g.id, r)
	h.log.Error("group failed; the host goes on without it", "group", g.id, "replica", g.replicaID,
		"panic", r, "stack", string(debug.Stack()))
	g.failed = err
	g.broken.Store(true)
	h.m.GroupsFailed.Inc()
	if st := g.status.Load(); st != nil {
		h.m.GroupsByRole.WithLabelValues(st.Role.String()).Dec() // it has no role any more
	}
	g.leaveQuiescence()
	h.sched.SetTicking(g.id, false)
	if g.role == raft.StateLeader {
		g.wakeFollowers()
	}
	if g.serving.Load() {
		g.serving.Store(false)
		h.m.Leaders.Dec()
	}
	// Proposals raft has may still commit through the other replicas.
	g.failWaiting(fmt.Errorf("%w: %w", ErrAmbiguous, err), err)
	h.passWriterWake(g) // refusing now: no wake comes after this
	if in != nil {
		in.fail(g, err) // what the pass took and had not handed on
	}
	h.cfg.Events.GroupFailed(GroupID(g.id), err)
	h.emit(Event{Kind: EventGroupFailed, GroupID: GroupID(g.id), Err: err})
}

// processFailed is a pass over a group that failed alone: it can only be
// removed; anything else that reached it is failed.
func (g *group) processFailed() {
	g.mu.Lock()
	removals := len(g.mu.remove) > 0
	g.mu.Unlock()
	if removals {
		_ = g.h.removeGroup(g) // its requests hear how it went
		return
	}
	g.failWaiting(g.failed, g.failed)
}

// releaseInbox returns bytes to the host's inbox budget.
func (h *Host) releaseInbox(n int64) {
	if n != 0 {
		h.inboxBytes.Add(-n)
		h.m.InboxBytes.Sub(float64(n))
	}
}

// releaseControl returns bytes to the failure detector's inbox budget.
func (h *Host) releaseControl(n int64) {
	if n != 0 {
		h.controlBytes.Add(-n)
		h.m.InboxBytes.Sub(float64(n))
	}
}
