package multiraft

import (
	"maps"
	"math/rand/v2"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/flotilla-io/flotilla/transport"
)

// Quiescence.
//
// An idle group costs nothing: at a tick, a leader whose group has nothing
// in flight (no proposal, read, transfer or membership change; applied ==
// commit == last index; every follower on a live node caught up in
// replicate state; no snapshot in flight; nothing in its Ready) sends each
// live follower one quiesce heartbeat, in the coalesced heartbeat frame,
// instead of ticking, and leaves the tick loop. A follower that agrees on
// term, leader and commit (after stepping the heartbeat, which may
// advance its commit) and has nothing of its own in flight leaves it too;
// its answer to the heartbeat changes nothing at the leader, which stays
// quiet. A quiesced group is not ticked and sends nothing.
//
// Anything that needs the group wakes it: a request; a message from a
// peer that leaves raft work (most that reach a quiesced group leave none:
// the answers to the leader's last heartbeats, stale messages, pre-votes
// within a lease); a wake request (a heartbeat record marked wake, never
// stepped) from a follower that woke, or from the host of a leader
// replica that failed or was removed; or a change of liveness
// (liveness.go): a follower whose leader's node stopped being live, or
// restarted, forgets the leader and campaigns, jittered; a leader wakes
// when it no longer has a live quorum, or when the node of a follower
// that lagged when it quiesced is live again. A woken leader ticks and
// heartbeats, which wakes its followers; a woken follower wakes its
// leader, and asks again after an election timeout without news from it.
// Nothing that waits for a tick (retried appends or reads, transfers) can
// be stranded: a group with any of it never quiesces.
//
// Quiescence is the replica's own state, never persisted: a restarted host
// starts every group awake.

// quiesceCheck is what a follower saw in a quiesce heartbeat, checked at
// the end of the pass that stepped it.
type quiesceCheck struct {
	from, term, commit uint64
}

// idleLocally reports whether the replica has nothing of its own in flight.
func (g *group) idleLocally() bool {
	return len(g.pending) == 0 && len(g.byIndex) == 0 && len(g.reads) == 0 && len(g.transfers) == 0 &&
		len(g.acks) == 0 && len(g.appendBacklog) == 0 && len(g.sending) == 0 && len(g.staged) == 0 && !g.truncRetry &&
		g.applied == g.commit && g.last == g.commit && !g.rn.HasReady()
}

// maybeQuiesceLeader quiesces a leader whose group is idle, at a tick
// (instead of ticking). It reports whether it did.
func (g *group) maybeQuiesceLeader() bool {
	if g.h.cfg.DisableQuiescence || g.quiesced || g.role != raft.StateLeader || !g.serving.Load() || !g.idleLocally() {
		return false
	}
	if len(g.confState.GetVotersOutgoing()) > 0 || g.rn.BasicStatus().LeadTransferee != 0 {
		return false
	}
	// Published before the nodes' liveness is looked at: a node whose
	// liveness changes meanwhile either nudges this group (a transition
	// nudges the quiet groups with a replica there) or is seen here.
	g.quiet.Store(true)
	ok, liveVoters, voters := true, 0, 0
	var lagging []uint64              // nodes
	live := make(map[uint64][]uint64) // node -> caught-up replicas there
	g.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if !ok {
			return
		}
		self := id == g.replicaID
		node, known := g.replicas[id]
		isLive := self || (known && g.h.live.isLive(node))
		if typ == raft.ProgressTypePeer {
			voters++
			if isLive {
				liveVoters++
			}
		}
		caughtUp := pr.Match == g.commit && (self || pr.State == tracker.StateReplicate)
		switch {
		case self:
			ok = caughtUp
		case isLive && caughtUp:
			live[node] = append(live[node], id)
		case isLive:
			ok = false // a live follower still catching up: keep ticking
		case !caughtUp:
			lagging = append(lagging, node)
		}
	})
	if !ok || liveVoters <= voters/2 {
		g.quiet.Store(false)
		return false
	}
	g.lagging = lagging
	g.sendQuiesce(live)
	g.setQuiesced()
	return true
}

// noteQuiesce handles a quiesce heartbeat: it is stepped like any
// heartbeat (it may carry a commit index this follower has not seen), and
// the pass's end decides whether the follower quiesces.
func (g *group) noteQuiesce(m *pb.Message) {
	g.quiesceAsked = &quiesceCheck{from: m.GetFrom(), term: m.GetTerm(), commit: m.GetCommit()}
}

// agrees reports whether a quiesce heartbeat says what a quiesced
// follower already knows.
func (g *group) agrees(m *pb.Message) bool {
	return g.role == raft.StateFollower && g.leader == m.GetFrom() && g.term == m.GetTerm() && g.commit == m.GetCommit()
}

// maybeQuiesceFollower quiesces a follower that a quiesce heartbeat of
// this pass asked to, if it agrees and is idle.
func (g *group) maybeQuiesceFollower() {
	q := g.quiesceAsked
	g.quiesceAsked = nil
	if q == nil || g.quiesced || g.h.cfg.DisableQuiescence || g.role != raft.StateFollower ||
		g.leader != q.from || g.term != q.term || g.commit != q.commit || !g.idleLocally() ||
		!g.h.live.isLive(g.replicas[g.leader]) || g.campaignAt != 0 {
		return
	}
	g.setQuiesced()
}

func (g *group) setQuiesced() {
	g.quiesced = true
	g.quiet.Store(true)
	g.h.sched.SetTicking(g.id, false)
	g.h.m.QuiescedGroups.Inc()
}

// wake ends the group's quiescence, if it is quiesced; cause labels the
// wake-up's metric.
func (g *group) wake(cause string) {
	if !g.leaveQuiescence() {
		return
	}
	g.h.sched.SetTicking(g.id, true)
	g.h.m.Wakeups.WithLabelValues(cause).Inc()
	g.leaderHeard = g.ticks // maybeWakeLeader counts from here
	if cause == "request" || cause == "raft" {
		g.wakeLeader() // a waking follower wakes its leader
	}
}

// wakeLeader asks a follower's quiesced leader to wake (a heartbeat
// response marked wake, never stepped): a follower that ticks needs its
// leader's heartbeats, or its election clock runs out.
func (g *group) wakeLeader() {
	if g.role != raft.StateFollower || g.leader == 0 {
		return
	}
	node, ok := g.replicas[g.leader]
	if !ok || !g.h.live.isLive(node) {
		return
	}
	m := &pb.Message{Type: pb.MsgHeartbeatResp.Enum(), From: new(g.replicaID), To: new(g.leader), Term: new(g.term)}
	g.h.trans.Send(node, []transport.Envelope{{GroupID: g.id, Message: m, Wake: true}})
}

// maybeWakeLeader wakes the leader of an awake follower (or learner)
// that heard nothing from it for an election timeout: a voter would soon
// pre-vote and be answered, but a learner never does, and one quiesce
// heartbeat lost would leave it ticking alone for good.
func (g *group) maybeWakeLeader() {
	if g.leader == 0 || g.role != raft.StateFollower || g.ticks-g.leaderHeard < uint64(g.h.cfg.ElectionTicks) {
		return
	}
	g.leaderHeard = g.ticks
	g.wakeLeader()
}

// leaveQuiescence ends the group's quiescence (wake, or a removed or
// failed group leaving the counts), and reports whether it was quiesced.
func (g *group) leaveQuiescence() bool {
	if !g.quiesced {
		return false
	}
	g.quiesced = false
	g.quiet.Store(false)
	g.h.m.QuiescedGroups.Dec()
	g.lagging = nil
	return true
}

// checkLiveness acts on the liveness of the nodes the group depends on,
// when a transition nudged it (and on every pass of an awake follower:
// one map lookup). A follower whose leader's node is not live, or
// restarted since the follower learned the leader, forgets the leader (so that the other followers, which may have forgotten it too,
// grant it their pre-votes at once) and campaigns after a jittered part
// of the election timeout, so that one follower usually wins without a
// split vote. A quiesced leader wakes if it lost a live quorum (raft's
// CheckQuorum then steps it down) or a lagging follower's node is back.
func (g *group) checkLiveness(nudged uint32) {
	switch g.role {
	case raft.StateFollower:
		node, known := g.replicas[g.leader]
		if g.leader == 0 || !known {
			return
		}
		epoch := g.h.live.epoch(node)
		if g.h.live.isLive(node) && epoch == g.leaderEpoch {
			return
		}
		g.leaderEpoch = epoch // a restart is acted on once
		g.wake("leader_down")
		g.leaderLost()
	case raft.StateLeader:
		if nudged == 0 || !g.quiesced {
			return
		}
		for _, node := range g.lagging {
			if g.h.live.isLive(node) {
				g.wake("peer_up")
				return
			}
		}
		live, voters := 0, len(g.confState.GetVoters())
		for _, id := range g.confState.GetVoters() {
			if node, ok := g.replicas[id]; (ok && g.h.live.isLive(node)) || id == g.replicaID {
				live++
			}
		}
		if live <= voters/2 {
			g.wake("quorum")
			return
		}
		if nudged&nudgeUp == 0 {
			return
		}
		// A node came back (or restarted): tell its replicas again that
		// the group is quiesced (they may know no leader), quietly.
		to := make(map[uint64][]uint64)
		g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			if node, ok := g.replicas[id]; ok && id != g.replicaID && g.h.live.isLive(node) {
				to[node] = append(to[node], id)
			}
		})
		g.sendQuiesce(to)
	}
}

// leaderLost follows news that a follower's leader is gone (its node is
// not live or restarted, or its host says the replica left): the
// follower forgets it, and the first live voter after it in the group's
// order of preference campaigns at once; the others hold their election
// clocks and campaign three quarters of an election timeout later or more
// (jittered, within one), if it did not win: with two of three voters
// left, two candidates at once would split the vote, and under load an
// election takes several ticks.
func (g *group) leaderLost() {
	successor := g.firstLiveBut(g.leader)
	if err := g.rn.ForgetLeader(); err != nil {
		return
	}
	if successor {
		g.campaignAt, g.campaigns = g.retryTick(), 1
		_ = g.rn.Campaign()
		return
	}
	et := uint64(g.h.cfg.ElectionTicks)
	delay := max(1, et*3/4+uint64(rand.IntN(int(et/4)+1)))
	g.campaignAt, g.campaigns, g.holdTicks = g.ticks+delay, 0, int(delay)
}

// maybeCampaign starts the campaign checkLiveness scheduled, if the
// replica still has no leader when its time comes, and tries again a few
// ticks later while it has none (up to campaignTries times): a pre-vote
// that reached a follower which had not yet seen the leader's node die
// (it ignores the pre-vote within its lease) would otherwise wait out a
// whole randomized election timeout. Only a follower or a pre-candidate
// campaigns again (a pre-vote changes no term); a candidate waiting for
// votes lets its election run (under load it takes several ticks, and a
// new campaign would start a higher term and undo it), and raft's own
// election timer ends one that fails.
func (g *group) maybeCampaign() {
	if g.campaignAt == 0 || g.ticks < g.campaignAt {
		return
	}
	g.campaignAt = 0
	if g.leader != 0 || g.role == raft.StateLeader || g.campaigns >= campaignTries {
		g.campaigns = 0
		return
	}
	g.campaigns++
	g.campaignAt = g.retryTick()
	if g.role != raft.StateCandidate {
		_ = g.rn.Campaign()
	}
}

// preCampaigned follows raft's own election timer starting a pre-vote:
// its retries are scheduled as for a campaign of maybeCampaign's, so that
// a pre-vote ignored by a follower still within its lease is asked again
// within a few ticks rather than a whole randomized election timeout.
func (g *group) preCampaigned() {
	if g.campaignAt == 0 {
		g.campaignAt, g.campaigns = g.retryTick(), 1
	}
}

// deferCampaign follows a pre-vote or vote this replica granted while it
// waits to campaign for a lost leader: another voter, whose log is at
// least as long, is already running, so this one waits half an election
// timeout more, its election clock held, rather than split the vote. (A
// request it refused defers nothing: that voter cannot win.)
func (g *group) deferCampaign() {
	if g.campaignAt == 0 || g.role == raft.StateLeader || g.role == raft.StateCandidate {
		return
	}
	half := uint64(max(1, g.h.cfg.ElectionTicks/2))
	if g.campaignAt < g.ticks+half {
		g.campaignAt = g.ticks + half
	}
	g.holdTicks = max(g.holdTicks, int(g.campaignAt-g.ticks))
}

// retryTick is when a campaign for a lost leader is tried again: two to
// four ticks from now.
func (g *group) retryTick() uint64 { return g.ticks + 2 + uint64(rand.IntN(3)) }

// campaignTries bounds the campaigns maybeCampaign starts for one lost
// leader; raft's own election timer goes on after them.
const campaignTries = 4

// steppedQuietly follows a message stepped into a quiesced group: it
// wakes the group if raft has work from it. Most messages that reach a
// quiesced group leave raft nothing to do: the answers to the leader's
// last heartbeats before it quiesced, a stale message, or a pre-vote
// that raft ignores because its leader was heard from (or, here, is
// quiesced) within the election timeout. A quiesced leader answers such a
// pre-vote from a caught-up member with a quiesce heartbeat: a follower
// that woke because it lost sight of this node learns that its leader is
// alive and quiesces again, without waking the group.
func (g *group) steppedQuietly(m *pb.Message) {
	if g.rn.HasReady() {
		g.wake("message")
		return
	}
	// A quiesced follower ignores a pre-vote as raft does within its
	// lease: its leader is live (or liveness would have woken it), and a
	// leader replica that is gone from a live node has its host wake the
	// followers (wakeFollowers).
	if m.GetType() != pb.MsgPreVote || g.role != raft.StateLeader {
		return
	}
	from := m.GetFrom()
	node, member := g.replicas[from]
	if !member {
		return
	}
	caughtUp := false
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == from {
			caughtUp = pr.Match == g.commit && pr.State == tracker.StateReplicate
		}
	})
	if !caughtUp {
		g.wake("message")
		return
	}
	g.sendQuiesce(map[uint64][]uint64{node: {from}})
}

// sendQuiesce sends quiesce heartbeats to the given replicas, by node.
func (g *group) sendQuiesce(to map[uint64][]uint64) {
	out := outgoingPool.Get().(*outgoing)
	defer out.release()
	for node, replicas := range to {
		for _, id := range replicas {
			m := &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(g.replicaID), To: new(id), Term: new(g.term), Commit: new(g.commit)}
			out.add(node, transport.Envelope{GroupID: g.id, Message: m, Quiesce: true})
		}
	}
	g.send(out)
}

// wakeFollowers wakes the followers of a leader whose replica failed
// alone or was removed from this host (its node stays live, so liveness
// would never wake them): the host asks them to wake at every tick for two
// election timeouts (liveness.orphaned), after which their election
// clocks have run out and they elect a leader among themselves.
func (g *group) wakeFollowers() {
	g.h.live.orphaned(g.id, g.replicaID, g.replicas)
}

// preference is the group's voters in its order of preference for
// leadership: sorted, starting at the group's ID (so that leaders spread
// over the hosts).
func (g *group) preference() []uint64 {
	voters := slices.Sorted(slices.Values(g.confState.GetVoters()))
	if len(voters) == 0 { // a new group: its founding members
		voters = slices.Sorted(maps.Keys(g.replicas))
	}
	if len(voters) == 0 {
		return nil
	}
	start := int(g.id % uint64(len(voters)))
	return append(voters[start:], voters[:start]...)
}

// firstLiveBut reports whether this replica is the first voter of the
// group's preference whose node is live, replica except left out.
func (g *group) firstLiveBut(except uint64) bool {
	// preference() without its copy when raft's voter list is sorted (it
	// is): an awake follower asks at every pass that ticks.
	voters, start := g.confState.GetVoters(), 0
	if len(voters) > 0 && slices.IsSorted(voters) {
		start = int(g.id % uint64(len(voters)))
	} else {
		voters = g.preference()
	}
	for i := range voters {
		id := voters[(start+i)%len(voters)]
		if id == except {
			continue
		}
		if node, ok := g.replicas[id]; id == g.replicaID || (ok && g.h.live.isLive(node)) {
			return id == g.replicaID
		}
	}
	return false
}

// slowElectionClock reports whether a follower runs its election clock at
// half speed for the first election timeout after it last heard from its
// leader: one that has a leader and is not its successor (the first live
// voter of the preference after the leader). Its raft timer then fires
// half an election timeout later than it would, so when a busy leader's
// node dies its successor (at once, as liveness notices, or by its own
// timer) starts the only election, and the two do not split the vote
// (with two of three voters left, two candidates at once always do).
// Liveness, not the clock, is what notices a dead node; the clock is for a
// leader replica that fails alone on a live node: raft's lease on this
// follower then lasts one and a half election timeouts instead of one,
// and the successor wins within about two.
func (g *group) slowElectionClock() bool {
	return g.role == raft.StateFollower && g.leader != 0 && !g.firstLiveBut(g.leader)
}

// spreadFirstElection keeps a host that starts with many leaderless
// groups (a new cluster, or every host restarting) from starting an
// election storm: only the group's preferred replica (one of the voters,
// by the group's ID, so that leaders spread over the hosts) campaigns, a
// tick or two after start; the others hold their election clocks for an
// election timeout, so they campaign only if the preferred one did not
// win (its host is down, or its log is behind). A replica that hears from
// a leader meanwhile stops holding.
func (g *group) spreadFirstElection() {
	pref := g.preference()
	if len(pref) == 0 {
		return // a joining replica: it waits to be added
	}
	if pref[0] == g.replicaID {
		g.campaignAt = 1 + uint64(rand.IntN(2))
	} else {
		g.holdTicks = g.h.cfg.ElectionTicks
	}
}
