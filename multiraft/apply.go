package multiraft

import (
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/store"
)

// apply runs committed entries through the state machine, in order, on the
// worker that owns the group, and completes the proposals waiting here.
// Indexes at or below the applied index are skipped (a snapshot may have
// moved it).
//
// The commands of consecutive normal entries go to the state machine in
// one call; a membership change ends a call (it changes the applied state
// the call commits). For an on-disk state machine each call's writes and
// the applied state after it commit in one batch, so every call reads what
// the previous ones wrote.
func (g *group) apply(entries []*pb.Entry) {
	start := time.Now()
	a := applier{g: g}
	for _, e := range entries {
		index := e.GetIndex()
		if index <= g.applied {
			continue
		}
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.GetData()) > 0 {
				n := batchLen(e.GetData())
				a.cmds, a.ids = slices.Grow(a.cmds, n), slices.Grow(a.ids, n)
				err := decodeBatch(e.GetData(), func(slot int, id uint64, data []byte) {
					a.cmds = append(a.cmds, Command{Index: index, Slot: slot, Data: data})
					a.ids = append(a.ids, id)
				})
				if err != nil {
					g.h.fail(fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, index, err))
					return
				}
			}
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			if !a.flush() {
				return
			}
			removedSelf, err := g.applyConfChange(e)
			if err != nil {
				g.h.fail(fmt.Errorf("multiraft: group %d: entry %d: %w", g.id, index, err))
				return
			}
			if removedSelf {
				g.applied, g.appliedTerm = index, e.GetTerm()
				g.releaseAcks()
				if err := g.h.removeGroup(g); err != nil {
					g.h.fail(err)
				}
				return
			}
		}
		g.applied, g.appliedTerm = index, e.GetTerm()
		a.indexes = append(a.indexes, index)
	}
	if !a.flush() {
		return
	}
	g.h.m.ApplyDuration.Observe(time.Since(start).Seconds())
	g.releaseAcks()
	g.releaseReads()
	g.maybeSnapshot()
}

// applier gathers the commands of one state machine call.
type applier struct {
	g       *group
	cmds    []Command
	ids     []uint64
	indexes []uint64 // indexes applied since the last flush
}

// flush hands the gathered commands to the state machine, commits an
// on-disk machine's batch with the applied state, parks the acks of the
// proposals that applied, and rejects those whose index went to another
// entry. It reports false if the host failed.
func (a *applier) flush() bool {
	g := a.g
	if len(a.indexes) == 0 && len(a.cmds) == 0 {
		return true
	}
	var batch *store.ApplyBatch
	if g.sm.persistsApplied() {
		batch = g.st.NewApplyBatch()
		defer batch.Close()
	}
	var results [][]byte
	g.readable.Store(g.applied) // committed and durable here: LogReader may read them
	if len(a.cmds) > 0 {
		var err error
		results, err = g.sm.apply(batch, a.cmds)
		if err == nil && len(results) != len(a.cmds) {
			err = fmt.Errorf("state machine returned %d results for %d commands", len(results), len(a.cmds))
		}
		if err != nil {
			g.h.fail(fmt.Errorf("multiraft: group %d: apply: %w", g.id, err))
			return false
		}
	}
	if batch != nil {
		batch.SetApplied(g.appliedState())
		if err := batch.Commit(); err != nil {
			g.h.fail(fmt.Errorf("multiraft: group %d: apply batch: %w", g.id, err))
			return false
		}
	}
	for i, c := range a.cmds {
		if p, ok := g.pending[a.ids[i]]; ok {
			delete(g.pending, a.ids[i])
			g.acks = append(g.acks, parkedAck{p: p, res: Result{Index: c.Index, Slot: c.Slot, Value: results[i]}})
		}
	}
	for _, index := range a.indexes {
		g.rejectOverwritten(index)
	}
	if g.appliedTerm == g.term && !g.serving.Load() && g.role == raft.StateLeader {
		g.startServing()
	} else if g.urgent && g.appliedTerm == g.term {
		g.markUrgent()
	}
	a.cmds, a.ids, a.indexes = a.cmds[:0], a.ids[:0], a.indexes[:0]
	return true
}

// parkedAck is an applied proposal waiting for its entry to be durable on
// this host.
type parkedAck struct {
	p   *proposal
	res Result
}

// releaseAcks acknowledges the applied proposals whose entries the local
// log now holds durably. With async storage writes a leader can commit and
// apply an entry on its followers' acknowledgements before its own fsync
// returns; the client still hears nothing until that fsync has.
func (g *group) releaseAcks() {
	if len(g.acks) == 0 {
		return
	}
	durable, _ := g.st.LastIndex() // published only once synced
	n := 0
	for n < len(g.acks) && g.acks[n].res.Index <= durable {
		g.acks[n].p.finish(g.acks[n].res, nil)
		n++
	}
	g.acks = append(g.acks[:0], g.acks[n:]...)
}

// rejectOverwritten fails, definitely, the proposals that expected to be
// at index but were not applied there: another entry took their place.
func (g *group) rejectOverwritten(index uint64) {
	for _, p := range g.byIndex[index] {
		if _, waiting := g.pending[p.id]; waiting {
			delete(g.pending, p.id)
			p.finish(Result{}, fmt.Errorf("%w: group %d: index %d was applied with another entry", ErrRejected, g.id, index))
		}
	}
	delete(g.byIndex, index)
}

// softStateChanged follows leadership. Losing it fails what is pending
// here as ambiguous: those entries may still commit under the new leader.
func (g *group) softStateChanged(ss raft.SoftState) {
	if ss.RaftState == raft.StatePreCandidate && g.role != raft.StatePreCandidate {
		g.preCampaigned()
	}
	g.role = ss.RaftState
	if ss.Lead != g.leader {
		g.leader = ss.Lead
		g.leaderNode.Store(g.replicas[ss.Lead])
		g.leaderEpoch = g.h.live.epoch(g.replicas[ss.Lead])
		if ss.Lead != 0 { // a new leader seen, not one forgotten
			g.h.m.LeaderChanges.Inc()
			g.campaignAt, g.campaigns, g.holdTicks, g.leaderHeard, g.fromLeader = 0, 0, 0, g.ticks, g.ticks
		}
		g.leaderIs(g.replicas[ss.Lead])
		if ss.Lead != g.replicaID {
			g.leaderChanged(LeaderInfo{GroupID: GroupID(g.id), Leader: NodeID(g.replicas[ss.Lead]), Term: g.term})
		}
	}
	if ss.RaftState != raft.StateLeader && g.serving.Load() {
		g.serving.Store(false)
		g.h.m.Leaders.Dec()
		g.failPending(fmt.Errorf("%w: group %d: leadership lost", ErrAmbiguous, g.id))
	}
	g.markUrgent()
}

// noteLeaderNode publishes the leader's node after the membership
// changed, and tells the listeners if it changed: a replica that learns
// its leader before the membership naming the leader's node (one that
// joined, or restarted from an older applied state) announced a leader
// on no node.
func (g *group) noteLeaderNode() {
	node := g.replicas[g.leader]
	if old := g.leaderNode.Swap(node); old != node && node != 0 && g.leader != g.replicaID {
		g.leaderEpoch = g.h.live.epoch(node) // as softStateChanged would have, knowing the node
		g.leaderChanged(LeaderInfo{GroupID: GroupID(g.id), Leader: NodeID(node), Term: g.term})
	}
}

// markUrgent keeps the group in the scheduler's control lane while it
// has no serving leader: no leader known, or one on a node that is not
// live (a follower that learns of a leader from messages that waited
// while its node died must forget it at once, not after the normal
// lane's wait), an election, or a new leader whose first entry of its
// term this replica has not yet applied (the leader's clients wait for
// that entry to commit and apply, through its followers too, and under
// load the normal lane is long).
func (g *group) markUrgent() {
	urgent := g.leader == 0 || !g.h.live.isLive(g.replicas[g.leader]) ||
		g.role == raft.StateCandidate || g.role == raft.StatePreCandidate ||
		g.appliedTerm < g.term || (g.role == raft.StateLeader && !g.serving.Load())
	if urgent != g.urgent {
		g.urgent = urgent
		g.h.sched.SetUrgent(g.id, urgent)
	}
}

// startServing announces this host as the group's leader: it has applied
// an entry of its own term, so its state machine is up to date.
func (g *group) startServing() {
	g.serving.Store(true)
	g.markUrgent()
	g.h.m.Leaders.Inc()
	g.h.m.LeadershipsAcquired.Inc()
	g.leaderChanged(LeaderInfo{GroupID: GroupID(g.id), Leader: g.h.cfg.NodeID, Term: g.term, Local: true})
}

// leaderChanged tells the listener and the subscriptions.
func (g *group) leaderChanged(l LeaderInfo) {
	g.h.cfg.Events.LeaderChanged(l)
	g.h.emit(Event{Kind: EventLeaderChanged, GroupID: l.GroupID, Leader: l, Term: l.Term})
}

// failPending fails every proposal that was handed to raft and is not yet
// applied. Applied ones waiting for the local fsync keep waiting: their
// outcome is known.
func (g *group) failPending(err error) {
	for id, p := range g.pending {
		p.finish(Result{}, err)
		delete(g.pending, id)
	}
	clear(g.byIndex)
}
