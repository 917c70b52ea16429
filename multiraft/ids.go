package multiraft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"
)

// Three ID spaces meet in a host; their types keep them apart.

// GroupID names a Raft group (a broker's partition). 0 is reserved.
type GroupID uint64

// NodeID names a host of the cluster (Config.NodeID). 0 is reserved.
type NodeID uint64

// ReplicaID names one replica of one group: raft's own ID for it. The
// group's leader allots replica IDs (ChangeMembership returns them), and
// never reuses one: a node that hosted a group may host it again later,
// as a new replica with a new ID. 0 is reserved.
type ReplicaID uint64

// Role is a replica's part in its group, as its host sees it.
type Role int

// The roles. PreCandidate and Candidate are the two steps of an election.
const (
	RoleFollower Role = iota
	RolePreCandidate
	RoleCandidate
	RoleLeader
)

func (r Role) String() string {
	switch r {
	case RoleFollower:
		return "follower"
	case RoleLeader:
		return "leader"
	case RoleCandidate:
		return "candidate"
	case RolePreCandidate:
		return "pre-candidate"
	default:
		return fmt.Sprintf("Role(%d)", int(r))
	}
}

func roleOf(s raft.StateType) Role {
	switch s {
	case raft.StateLeader:
		return RoleLeader
	case raft.StateCandidate:
		return RoleCandidate
	case raft.StatePreCandidate:
		return RolePreCandidate
	default:
		return RoleFollower
	}
}

// ProgressState is how a leader replicates to a follower.
type ProgressState int

// The states: probing for where the follower's log matches, streaming
// entries to it, or sending it a snapshot.
const (
	ProgressProbe ProgressState = iota
	ProgressReplicate
	ProgressSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case ProgressProbe:
		return "probe"
	case ProgressReplicate:
		return "replicate"
	case ProgressSnapshot:
		return "snapshot"
	default:
		return fmt.Sprintf("ProgressState(%d)", int(s))
	}
}

func progressStateOf(s tracker.StateType) ProgressState {
	switch s {
	case tracker.StateReplicate:
		return ProgressReplicate
	case tracker.StateSnapshot:
		return ProgressSnapshot
	default:
		return ProgressProbe
	}
}
