package multiraft

import (
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/transport"
)

// Collecting replicas that missed their own removal.
//
// A replica cut off while the group removed it never applies its removal:
// it keeps its data and keeps campaigning. When a message of such a replica
// reaches a member, the member can tell for sure that it was removed: its
// ID is below the group's replicated next replica ID (so a membership
// change added it, and IDs only advance when such a change applies) and it
// is not in the configuration the member has applied. The member answers
// with a removal notice; the replica's host then removes it, leaving a
// tombstone. A member that is behind knows less, never more, so it can
// fail to answer but never answer wrongly. The replica trusts no single
// member: it goes once a majority of the voters it knows said so, and
// asks the others when one does (removedNotice).
//
// The notice travels as a Raft message of a type raft only uses locally
// (MsgUnreachable), addressed to the removed replica, with the group's
// next replica ID in Index; hosts take it out before raft sees it.

func removedNotice(g *group, to uint64) *pb.Message {
	return &pb.Message{Type: pb.MsgUnreachable.Enum(), From: new(g.replicaID), To: new(to), Index: new(g.nextReplicaID)}
}

func isRemovedNotice(m *pb.Message) bool { return m.GetType() == pb.MsgUnreachable }

// fromRemovedReplica answers a message from a replica this member knows
// was removed, and reports whether it was one (the message is dropped).
func (g *group) fromRemovedReplica(in inbound) bool {
	from := in.m.GetFrom()
	if from == 0 || from >= g.nextReplicaID {
		return false
	}
	if _, member := g.replicas[from]; member {
		return false
	}
	g.h.m.MessagesDropped.WithLabelValues("removed_replica").Inc()
	g.h.trans.Send(in.from, []transport.Envelope{{GroupID: g.id, Message: removedNotice(g, from)}})
	return true
}

// removedNotice reports whether the members' notices prove this replica
// was removed, counting this one. A notice counts only from the node that
// hosts the member it names (sender binding) and only from a voter of the
// configuration this replica knows; the replica goes once a majority of
// those voters sent one. One host's word, right or wrong, removes nothing:
// what it deletes cannot be had back. A replica that knows no
// configuration (it joined and never got its snapshot) is never collected
// this way; RemoveGroup removes it.
func (g *group) removedNotice(in inbound) bool {
	m := in.m
	if m.GetTo() != g.replicaID || m.GetIndex() <= g.replicaID {
		return false // not about this replica, or not proof of its removal
	}
	from := m.GetFrom()
	voters := g.confState.GetVoters()
	if node, member := g.replicas[from]; !member || node != in.from || !slices.Contains(voters, from) {
		g.h.m.MessagesDropped.WithLabelValues("notice_unverified").Inc()
		return false
	}
	if !slices.Contains(g.removalNotices, from) {
		g.removalNotices = append(g.removalNotices, from)
	}
	if len(g.removalNotices) > len(voters)/2 {
		return true
	}
	g.askVoters(voters)
	return false
}

// askVoters asks the voters this replica knows that sent no notice yet
// whether it was removed: a message to each (a wake request, never
// stepped) that a member which removed it answers with a notice. A
// removed replica may be quiesced and send nothing of itself; it asks
// only when a notice came, so never more often than notices do.
func (g *group) askVoters(voters []uint64) {
	for _, v := range voters {
		node, ok := g.replicas[v]
		if v == g.replicaID || !ok || slices.Contains(g.removalNotices, v) {
			continue
		}
		m := &pb.Message{Type: pb.MsgHeartbeatResp.Enum(), From: new(g.replicaID), To: new(v), Term: new(g.term)}
		g.h.trans.Send(node, []transport.Envelope{{GroupID: g.id, Message: m, Wake: true}})
	}
}
