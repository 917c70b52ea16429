package transport

import (
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Verdict is what a Filter decides for one message.
type Verdict struct {
	Drop  bool
	Delay time.Duration // deliver late (and so possibly out of order)
}

// Deliver is the verdict that lets a message through untouched.
var Deliver = Verdict{}

// Filter decides the fate of a message from one node to another. Filters
// are the fault injection of the in-memory network; they see snapshots
// (as their MsgSnap) too.
type Filter func(from, to NodeID, e Envelope) Verdict

// DropBetween drops every message between a and b, both ways.
func DropBetween(a, b NodeID) Filter {
	return func(from, to NodeID, _ Envelope) Verdict {
		if (from == a && to == b) || (from == b && to == a) {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// Isolate drops every message to or from node.
func Isolate(node NodeID) Filter {
	return func(from, to NodeID, _ Envelope) Verdict {
		if from == node || to == node {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DropGroup drops every message of a group.
func DropGroup(groupID uint64) Filter {
	return func(_, _ NodeID, e Envelope) Verdict {
		if e.GroupID == groupID {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DropType drops every message of the given type.
func DropType(t pb.MessageType) Filter {
	return func(_, _ NodeID, e Envelope) Verdict {
		if e.Message.GetType() == t {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DelayAll delays every message by d.
func DelayAll(d time.Duration) Filter {
	return func(NodeID, NodeID, Envelope) Verdict { return Verdict{Delay: d} }
}
