package multiraft

import (
	"errors"
	"fmt"
	"syscall"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// maxTicksPerPass bounds the ticks a group catches up on in one pass: a
// group starved for a while must not fire an election the moment it runs.
const maxTicksPerPass = 2

// process is one pass over a group on the
// worker that owns it. It takes everything queued for the group, steps
// what arrived (durable-append responses first, then peers' messages),
// ticks, hands the queued requests to raft, and then handles every Ready
// raft has. A panic in the pass fails the group alone (fail.go).
func (h *Host) process(groupID uint64, w scheduler.Work) {
	if h.closed.Load() {
		return
	}
	g := h.group(GroupID(groupID))
	if g == nil {
		return
	}
	defer h.recoverGroup(g)
	if err := h.Err(); err != nil {
		// Fail-stop: nothing more is stepped; what waits here learns it.
		g.stop(fmt.Errorf("%w: %w", ErrStopped, err))
		return
	}
	if g.failed != nil {
		g.processFailed()
		return
	}
	in := g.take()
	g.pass = in // for recoverGroup
	g.stage(in.staged)
	defer g.releaseUntaken()
	if g.removing(in) {
		return
	}
	// A quiesced group wakes before anything that needs it is stepped.
	requests := len(in.proposals)+len(in.reads)+len(in.transfers)+len(in.confChanges) > 0
	switch {
	case requests:
		g.wake("request")
	case len(in.snapReports)+len(in.staged)+len(in.unreachable) > 0:
		g.wake("raft")
	}
	g.checkLiveness(g.nudged.Swap(0))
	g.retryAppends()
	g.reportSnapshots(in.snapReports)
	g.takeSnapshotWork(in.snapReqs, in.snapWritten)
	for _, m := range in.storage {
		g.step(m)
	}
	g.releaseAcks()
	g.lastLow = g.last // every Ready of the last pass was handled: exact
	leaderGone := false
	for _, m := range in.inbox {
		if isRemovedNotice(m.m) || !g.admit(m) || g.fromRemovedReplica(m) {
			continue // a notice was looked at by removing
		}
		if m.wake {
			g.wake("asked") // never stepped: see quiesce.go
			// A wake heartbeat in the name of the leader replica, from
			// that replica's own node, says it is gone (wakeFollowers):
			// elect now, as for a dead node (once per pass: the leader is
			// forgotten only when the pass's Ready is handled).
			if !leaderGone && g.role == raft.StateFollower && g.leader != 0 && m.m.GetType() == pb.MsgHeartbeat &&
				m.m.GetFrom() == g.leader && m.from == g.replicas[g.leader] {
				leaderGone = true
				g.leaderLost()
			}
			continue
		}
		if hook := h.cfg.testing.beforeStep; hook != nil {
			hook(g.id, m.m)
		}
		quiet := g.quiesced
		switch {
		case m.quiesce && quiet && g.agrees(m.m):
			continue // a quiesced follower told again
		case m.quiesce:
			g.noteQuiesce(m.m)
		}
		if g.leader != 0 && m.m.GetFrom() == g.leader {
			g.leaderHeard, g.fromLeader = g.ticks, g.ticks
		}
		g.step(m.m)
		if quiet {
			g.steppedQuietly(m.m)
		}
	}
	for _, id := range in.unreachable {
		g.rn.ReportUnreachable(id)
	}
	if g.quiesced && g.rn.HasReady() {
		g.wake("raft")
	}
	// A leader quiesces at a tick, instead of ticking, so that no other
	// heartbeat follows its quiesce heartbeats. A quiesced group that a
	// tick raced with stays quiet.
	if w.Ticks > 0 && !g.quiesced && (requests || !g.maybeQuiesceLeader()) {
		slow := g.slowElectionClock()
		for i := 0; i < min(w.Ticks, maxTicksPerPass); i++ {
			g.ticks++
			switch {
			case g.holdTicks > 0:
				g.holdTicks-- // see holdTicks
			case slow && g.ticks%2 == 1 && g.ticks-g.fromLeader <= uint64(g.h.cfg.ElectionTicks):
			default:
				g.rn.Tick()
			}
		}
		g.maybeCampaign()
		g.maybeWakeLeader()
	}
	// Before any proposal: raft drops proposals while it transfers
	// leadership, and an abandoned transfer must not cost one.
	g.dropAbandonedTransfers()
	g.propose(in.proposals)
	confChanges := g.proposeConfChanges(in.confChanges)
	g.issueReads(in.reads)
	g.retryReads()
	g.startTransfers(in.transfers)
	g.retryTransfers()
	for g.rn.HasReady() && h.Err() == nil && !g.removed {
		g.handleReady(g.rn.Ready())
	}
	if g.removed || h.Err() != nil {
		return
	}
	g.rejectRefusedConfChanges(confChanges)
	if !requests {
		g.maybeQuiesceFollower()
	}
	g.quiesceAsked = nil
	if g.urgent {
		g.markUrgent() // what it depends on may change without a soft state
	}
	g.publishStatus(w.Flags&scheduler.Tick != 0)
}

// intake is what a pass takes from the group's queues.
type intake struct {
	storage     []*pb.Message
	inbox       []inbound
	inboxBox    *[]inbound // the pool's box of inbox
	proposals   []*proposal
	reads       []*readRequest
	transfers   []*transferRequest
	confChanges []*confChangeRequest
	snapReports []snapReport
	snapReqs    []*snapRequest
	snapWritten []snapWritten
	staged      map[uint64]*stagedSnapshot
	unreachable []uint64
}

// take empties the group's queues into its intake (removal requests stay
// queued for removing), and gives back the inbox's budget. The intake is
// the group's own, reused pass after pass: a pass allocates nothing for it.
func (g *group) take() *intake {
	g.mu.Lock()
	in := &g.intake
	*in = intake{storage: g.mu.storage, inbox: g.mu.inbox, inboxBox: g.mu.inboxBox, proposals: g.mu.proposals, reads: g.mu.reads,
		transfers: g.mu.transfers, confChanges: g.mu.confChanges, snapReports: g.mu.snapReports, staged: g.mu.staged,
		snapReqs: g.mu.snapRequests, snapWritten: g.mu.snapWritten,
		unreachable: in.unreachable[:0]}
	inboxBytes, controlBytes := g.mu.inboxBytes, g.mu.controlBytes
	g.mu.storage, g.mu.inbox, g.mu.inboxBox, g.mu.proposals, g.mu.reads, g.mu.inboxBytes, g.mu.controlBytes = nil, nil, nil, nil, nil, 0, 0
	g.mu.transfers, g.mu.confChanges, g.mu.snapReports, g.mu.staged = nil, nil, nil, nil
	g.mu.snapRequests, g.mu.snapWritten = nil, nil
	for id := range g.mu.unreachable {
		in.unreachable = append(in.unreachable, id)
	}
	clear(g.mu.unreachable)
	g.mu.Unlock()
	g.h.releaseInbox(inboxBytes)
	g.h.releaseControl(controlBytes)
	return in
}

// fail answers every request of an intake the pass did not hand on
// (finishing a request twice is harmless).
func (in *intake) fail(g *group, err error) {
	for _, p := range in.proposals {
		p.finish(Result{}, err)
	}
	for _, r := range in.confChanges {
		r.p.finish(Result{}, err)
	}
	for _, r := range in.reads {
		g.finishRead(r, err)
	}
	for _, r := range in.transfers {
		g.finishTransfer(r, err)
	}
	for _, r := range in.snapReqs {
		r.answer(snapAnswer{err: err})
	}
	in.reset()
}

// reset forgets what the intake held, keeping its unreachable slice.
func (in *intake) reset() {
	inboxPool.put(in.inboxBox, in.inbox)
	*in = intake{unreachable: in.unreachable[:0]}
}

// removing removes the group, before anything of the pass is stepped, if
// a removal was asked for or a member's notice says this replica was
// removed while it was cut off; it answers the whole intake then, and
// reports whether the group is gone.
func (g *group) removing(in *intake) bool {
	g.mu.Lock()
	asked := len(g.mu.remove) > 0
	g.mu.Unlock()
	noticed := false
	if !asked {
		for _, m := range in.inbox {
			if isRemovedNotice(m.m) && g.removedNotice(m) {
				noticed = true
				break
			}
		}
	}
	if !asked && !noticed {
		return false
	}
	if noticed {
		g.h.log.Info("replica was removed from its group while cut off; collecting it", "group", g.id, "replica", g.replicaID)
	}
	if err := g.h.removeGroup(g); err != nil && noticed {
		g.h.fail(err)
	}
	in.fail(g, fmt.Errorf("%w: group %d was removed", ErrGroupNotFound, g.id))
	return true
}

func (g *group) step(m *pb.Message) {
	g.noteStepped(m)
	if err := g.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		g.h.log.Debug("step", "group", g.id, "type", m.GetType(), "err", err)
	}
}

// propose packs the queued proposals into one entry. Only a serving leader
// proposes; elsewhere the proposals fail fast with the leader's identity.
func (g *group) propose(ps []*proposal) {
	if len(ps) == 0 {
		return
	}
	if !g.serving.Load() {
		err := g.notLeader()
		for _, p := range ps {
			p.finish(Result{}, err)
		}
		return
	}
	if err := g.rn.Propose(encodeBatch(ps)); err != nil {
		// Dropped by raft (uncommitted tail full, or leadership lost since
		// the check): it will never apply.
		werr := fmt.Errorf("%w: %w", ErrRejected, err)
		if errors.Is(err, raft.ErrProposalDropped) {
			werr = g.h.busy("group %d: raft dropped the proposal (uncommitted log full or leader changing)", g.id)
		}
		for _, p := range ps {
			p.finish(Result{}, werr)
		}
		return
	}
	for _, p := range ps {
		g.addPending(p)
	}
}

// handleReady processes one Ready: leadership changes, messages to peers
// (sent at once, so followers write in parallel with the leader), the
// append for the log writer, and the apply, inline.
func (g *group) handleReady(rd raft.Ready) {
	if rd.HardState != nil {
		if v := rd.HardState.GetVote(); v != 0 && v != g.replicaID && rd.HardState.GetTerm() > g.term {
			g.deferCampaign() // voted for another candidate
		}
		g.term, g.commit = rd.HardState.GetTerm(), rd.HardState.GetCommit()
	}
	if rd.SoftState != nil {
		g.softStateChanged(*rd.SoftState)
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		g.last = rd.Snapshot.GetMetadata().GetIndex()
	}
	if n := len(rd.Entries); n > 0 {
		g.last = rd.Entries[n-1].GetIndex() // an append may also cut the tail
	}
	g.lastLow = g.last
	if len(rd.ReadStates) > 0 {
		indexes := make(map[string]uint64, len(rd.ReadStates))
		for _, rs := range rd.ReadStates {
			indexes[string(rs.RequestCtx)] = rs.Index
		}
		g.readStates(indexes)
	}
	g.notePositions(rd.Entries)
	g.learnReplicas(rd.Entries)
	out := outgoingPool.Get().(*outgoing)
	defer out.release()
	for _, m := range rd.Messages {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			for _, r := range m.GetResponses() {
				// Answers leave once the append is durable; a granted
				// pre-vote is among them.
				if r.GetType() == pb.MsgPreVoteResp && !r.GetReject() && r.GetTo() != g.replicaID {
					g.deferCampaign() // granted another's pre-vote
				}
			}
			g.appendToLog(m)
		case raft.LocalApplyThread:
			g.apply(m.GetEntries())
			if g.removed {
				return
			}
			for _, resp := range m.GetResponses() {
				g.step(resp)
			}
		default:
			if m.GetType() == pb.MsgSnap {
				g.sendSnapshot(m)
				continue
			}
			g.route(out, m)
		}
	}
	g.send(out)
}

// route adds a message for a peer replica to the outgoing batches.
func (g *group) route(out *outgoing, m *pb.Message) {
	node, ok := g.replicas[m.GetTo()]
	if !ok {
		node, ok = g.learned[m.GetTo()]
	}
	if !ok || node == uint64(g.h.cfg.NodeID) {
		return // a replica we know no node for, or our own
	}
	out.add(node, transport.Envelope{GroupID: g.id, Message: m})
}

func (g *group) send(out *outgoing) {
	for i, node := range out.nodes {
		g.h.trans.Send(node, out.batches[i])
	}
}

// notePositions records the log index of our proposals in newly appended
// entries, so that an index applied with other proposal IDs fails them.
func (g *group) notePositions(entries []*pb.Entry) {
	if len(g.pending) == 0 {
		return
	}
	note := func(id uint64, index uint64) {
		if p, ok := g.pending[id]; ok && p.index == 0 {
			p.index = index
			if g.byIndex == nil {
				g.byIndex = make(map[uint64][]*proposal)
			}
			g.byIndex[index] = append(g.byIndex[index], p)
		}
	}
	for _, e := range entries {
		switch {
		case e.GetType() == pb.EntryConfChangeV2:
			note(confChangeID(e), e.GetIndex())
		case e.GetType() == pb.EntryNormal && len(e.GetData()) > 0:
			_ = decodeBatch(e.GetData(), func(_ int, id uint64, _ []byte) { note(id, e.GetIndex()) })
		}
	}
}

// appendToLog hands a MsgStorageAppend to the store's log writer. Its
// responses are released only once the write is durable: local ones are
// stepped back into the group, the rest go to peers (no vote, no append
// response leaves before the fsync that covers it).
func (g *group) appendToLog(m *pb.Message) {
	if len(g.appendBacklog) > 0 || !g.tryAppend(m) {
		g.backlog(m) // keep FIFO behind a refused append
	}
}

// backlog keeps an append the log writer refused. Its bytes are charged to
// the host's inbox budget until it is written, so while the disk cannot
// keep up the host drops new inbound messages (raft resends them) instead
// of growing backlogs without bound.
func (g *group) backlog(m *pb.Message) {
	size := appendSize(m)
	g.h.inboxBytes.Add(size)
	g.h.m.InboxBytes.Add(float64(size))
	g.appendBacklog = append(g.appendBacklog, m)
}

// retryAppends offers refused appends to the log writer again, in order.
func (g *group) retryAppends() {
	for len(g.appendBacklog) > 0 && g.tryAppend(g.appendBacklog[0]) {
		g.h.releaseInbox(appendSize(g.appendBacklog[0]))
		g.appendBacklog[0] = nil
		g.appendBacklog = g.appendBacklog[1:]
	}
}

func appendSize(m *pb.Message) int64 {
	n := int64(64)
	for _, e := range m.GetEntries() {
		n += int64(32 + len(e.GetData()))
	}
	return n
}

// tryAppend reports false if the log writer was busy (retried on the next
// pass; ticks guarantee there is one).
func (g *group) tryAppend(m *pb.Message) bool {
	if m.GetSnapshot() != nil && !raft.IsEmptySnap(m.GetSnapshot()) {
		switch err := g.installSnapshot(m); {
		case err == nil:
			return true
		case errors.Is(err, store.ErrFailed):
			return true // the store failed, and the host with it
		case errors.Is(err, store.ErrBusy), errors.Is(err, syscall.ENOSPC):
			// Backpressure, or a disk short of space (the space alarm has
			// tripped): nothing changed, and the snapshot waits with its
			// data for a later pass.
			return false
		case errors.Is(err, ErrInvalid), errors.Is(err, store.ErrInvalid), errors.Is(err, errRestore):
			// Data the group cannot go on from: it fails alone.
			panic(fmt.Sprintf("multiraft: group %d: install snapshot: %v", g.id, err))
		default:
			g.h.fail(fmt.Errorf("multiraft: group %d: install snapshot: %w", g.id, err))
			return true
		}
	}
	var hs *pb.HardState
	if m.Term != nil || m.Vote != nil || m.Commit != nil {
		hs = &pb.HardState{Term: new(m.GetTerm()), Vote: new(m.GetVote()), Commit: new(m.GetCommit())}
	}
	resps := g.sortResponses(m.GetResponses())
	done := func() { g.release(resps) }
	var err error
	if len(m.GetEntries()) == 0 && hs == nil {
		// Nothing to write, but the responses may acknowledge entries of
		// earlier appends still in flight: release them behind those.
		err = g.st.Flush(done)
	} else {
		err = g.st.Append(m.GetEntries(), hs, done)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrBusy):
		return false
	default:
		g.h.fail(fmt.Errorf("multiraft: group %d: append: %w", g.id, err))
		return true
	}
}

// responses are an append's responses, sorted on the worker (which owns
// the replica-to-node map) into local ones and batches per peer node, so
// that releasing them later touches nothing the worker owns.
type responses struct {
	local  []*pb.Message
	remote *outgoing // nil if none
}

func (g *group) sortResponses(resps []*pb.Message) responses {
	var r responses
	for _, m := range resps {
		if m.GetTo() == g.replicaID {
			r.local = append(r.local, m)
			continue
		}
		if r.remote == nil {
			r.remote = outgoingPool.Get().(*outgoing)
		}
		g.route(r.remote, m)
	}
	return r
}

// release sends an append's responses once the append is durable. It runs
// on the log writer's goroutine: it must not block.
func (g *group) release(r responses) {
	if r.remote != nil {
		g.send(r.remote)
		r.remote.release()
	}
	if len(r.local) > 0 {
		g.mu.Lock()
		first := len(g.mu.storage) == 0
		g.mu.storage = append(g.mu.storage, r.local...)
		g.mu.Unlock()
		if first { // see Host.propose
			g.h.sched.Enqueue(g.id, scheduler.Storage)
		}
	}
}
