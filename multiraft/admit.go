package multiraft

import (
	"context"
	"log/slog"
	"maps"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Admitting peers' messages.
//
// Raft trusts what it is stepped: a message's From is taken at its word,
// and a few malformed messages make it panic (a heartbeat committing past
// the end of the log, an append whose entries do not follow its index).
// The transport authenticates the node a frame comes from (mutual TLS,
// and the peer set); admit ties each message to that node and checks it
// before raft sees it:
//
//   - Sender binding. A message from replica R is stepped only if it came
//     from the node the group's applied configuration maps R to. A replica
//     the configuration does not name yet (added by a change this replica
//     has not applied) is known from the change's entry in its log (the
//     entries raft appended, and at start those not yet applied), which
//     names its node; a joining replica is told its group's replicas by
//     the host that made it join (JoinGroupOn). Any other replica ID is
//     refused: a peer cannot speak as a replica nobody allocated. Only a
//     joining replica, until its snapshot names its group's replicas,
//     takes a replica it was not told of (one allocated after it was
//     told, or any if told nothing: JoinGroup called locally, or a restart
//     before the snapshot) from the first node it hears it from, a handful
//     at most. Replicas known to be removed get a removal notice (gc.go),
//     and nothing else.
//   - Shape. Every remote message but a forwarded read carries a term (a
//     term-0 message is a local one to raft, stepped without the term
//     checks); a heartbeat commits no further than this replica's log
//     reaches; an append's entries follow its index with terms between its
//     log term and its term; a forwarded read carries its one context
//     entry; an append response acknowledges no more than the log holds.
//     Types no peer sends (a proposal: forwarding is disabled) are refused.
//
// Refusals are dropped and counted in messages_dropped_total by reason;
// raft retransmits what a legitimate peer meant.

// admit reports whether an inbound message may be stepped (or, for a wake
// record, acted on), counting a refusal by its reason.
func (g *group) admit(in inbound) bool {
	reason := g.bindSender(in)
	if reason == "" && !in.wake { // a wake record is never stepped
		reason = g.checkShape(in.m)
	}
	if reason == "" {
		return true
	}
	g.h.m.MessagesDropped.WithLabelValues(reason).Inc()
	if g.h.log.Enabled(context.Background(), slog.LevelDebug) { // debug only: a forger must not fill the log
		g.h.log.Debug("dropped a peer's message", "group", g.id, "reason", reason, "type", in.m.GetType(),
			"from_replica", in.m.GetFrom(), "from_node", in.from)
	}
	return false
}

// bindSender checks that the message came from the node that hosts the
// replica it names, returning the reason of a refusal ("" if none).
func (g *group) bindSender(in inbound) string {
	r := in.m.GetFrom()
	if node, member := g.replicas[r]; member {
		if node != in.from {
			return "sender_mismatch"
		}
		return ""
	}
	if r < g.nextReplicaID && len(g.replicas) > 0 {
		return "" // a removed replica: answered with a notice (gc.go), never stepped
	}
	// Not named by the configuration this replica applied: known from
	// the log or from the host that made this replica join.
	if node, ok := g.learned[r]; ok {
		if node != in.from {
			return "sender_mismatch"
		}
		return ""
	}
	if len(g.replicas) > 0 || r < g.seededBelow || !g.pin(r, in.from) {
		return "sender_unverified"
	}
	return ""
}

// pin maps a replica to its node in learned, making room by forgetting
// replicas the applied configuration names by now or that were removed
// since; it reports false if there is no room.
func (g *group) pin(replica, node uint64) bool {
	if len(g.learned) >= maxLearned {
		maps.DeleteFunc(g.learned, func(id, _ uint64) bool { _, member := g.replicas[id]; return member || id < g.nextReplicaID })
		if len(g.learned) >= maxLearned {
			return false
		}
	}
	if g.learned == nil {
		g.learned = make(map[uint64]uint64)
	}
	g.learned[replica] = node
	return true
}

// learnReplicas learns, from the membership changes among entries raft
// appended to this replica's log, which node hosts each replica they add:
// that replica may speak before this one applies the change (a new
// leader, a vote).
func (g *group) learnReplicas(entries []*pb.Entry) {
	for _, e := range entries {
		if t := e.GetType(); t != pb.EntryConfChange && t != pb.EntryConfChangeV2 {
			continue
		}
		_, _, adds, err := decodeConfChange(e)
		if err != nil {
			continue // raft's to refuse when it applies
		}
		for _, a := range adds {
			if _, member := g.replicas[a[0]]; !member && a[1] != 0 {
				g.pin(a[0], a[1])
			}
		}
	}
}

// checkShape refuses what raft would misread or panic on, returning the
// reason ("" if none).
func (g *group) checkShape(m *pb.Message) string {
	t := m.GetType()
	switch t {
	case pb.MsgProp:
		return "unexpected_type" // proposal forwarding is disabled
	case pb.MsgReadIndex:
		// Forwarded by a follower: no term, its context in one entry.
		if len(m.GetEntries()) != 1 {
			return "malformed"
		}
		return ""
	}
	if m.GetTerm() == 0 {
		return "malformed" // raft would take it for a local message
	}
	switch t {
	case pb.MsgHeartbeat:
		// raft commits a heartbeat's commit index and panics if the log
		// does not reach it. A leader sends at most what this replica
		// acknowledged.
		if c := m.GetCommit(); c > g.commit && c > g.lastLow {
			return "commit_beyond_log"
		}
	case pb.MsgApp:
		if !appendWellFormed(m) {
			return "malformed"
		}
	case pb.MsgAppResp:
		if !m.GetReject() && m.GetIndex() > g.last && g.role == raft.StateLeader {
			return "index_beyond_log"
		}
	case pb.MsgSnap:
		if !confStateWellFormed(m.GetSnapshot().GetMetadata().GetConfState()) {
			return "malformed"
		}
	}
	return ""
}

// appendWellFormed reports whether an append's entries follow its index,
// one by one, with terms that never go down, from its log term up to its
// term. raft indexes the log by the entries' own indexes: entries that do
// not follow could overwrite committed ones, which it panics on.
func appendWellFormed(m *pb.Message) bool {
	prev, logTerm, term := m.GetIndex(), m.GetLogTerm(), m.GetTerm()
	if logTerm > term {
		return false
	}
	last := logTerm
	for i, e := range m.GetEntries() {
		if e.GetIndex() != prev+uint64(i)+1 || e.GetIndex() <= prev { // the second: overflow
			return false
		}
		if e.GetTerm() < last || e.GetTerm() > term {
			return false
		}
		last = e.GetTerm()
	}
	return true
}

// confStateWellFormed reports whether raft can restore a snapshot's
// configuration (raft panics on one it cannot).
func confStateWellFormed(cs *pb.ConfState) bool {
	if cs == nil {
		return true
	}
	cfg, progress, err := confchange.Restore(confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0)}, cs)
	if err != nil {
		return false
	}
	// raft also panics on one that restores to something else (an ID
	// named twice, or as voter and learner).
	trk := tracker.MakeProgressTracker(1, 0)
	trk.Config, trk.Progress = cfg, progress
	return cs.Equivalent(trk.ConfState()) == nil
}

// noteStepped keeps lastLow, a lower bound of raft's last index within a
// pass (exact at its start and after each Ready): an append may cut the
// log's tail back to its last entry, and a snapshot replaces the log.
func (g *group) noteStepped(m *pb.Message) {
	switch m.GetType() {
	case pb.MsgApp:
		if n := len(m.GetEntries()); n > 0 {
			g.lastLow = min(g.lastLow, m.GetIndex()+uint64(n))
		}
	case pb.MsgSnap:
		g.lastLow = min(g.lastLow, m.GetSnapshot().GetMetadata().GetIndex())
	}
}
