package multiraft

import (
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
// fail to answer but never answer wrongly.
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

// removedNotice reports whether a member's notice proves this replica
// was removed.
func (g *group) removedNotice(m *pb.Message) bool {
	if m.GetTo() != g.replicaID || m.GetIndex() <= g.replicaID {
		return false // not about this replica, or not proof of its removal
	}
	if _, stillMember := g.replicas[m.GetFrom()]; !stillMember && len(g.replicas) > 0 {
		return false // only trust replicas of the configuration we know
	}
	return true
}
