package multiraft

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/scheduler"
)

// ChangeType is a kind of membership change.
type ChangeType int

func (t ChangeType) String() string {
	switch t {
	case AddVoter:
		return "add voter"
	case AddLearner:
		return "add learner"
	case RemoveReplica:
		return "remove replica"
	default:
		return fmt.Sprintf("ChangeType(%d)", int(t))
	}
}

const (
	// AddVoter adds a voting replica on a node (or promotes its learner).
	AddVoter ChangeType = iota
	// AddLearner adds a non-voting replica on a node.
	AddLearner
	// RemoveReplica removes the replica on a node.
	RemoveReplica
)

// Change is one membership change, naming the node it concerns.
type Change struct {
	Type ChangeType
	Node NodeID
}

// confChangeRequest waits for a membership change to apply.
type confChangeRequest struct {
	changes    []Change
	p          *proposal
	keepVoters bool // AddLearner leaves a voter a voter (AddReplica)
}

// ChangeMembership proposes membership changes on the group's leader and
// returns, once they are applied here, the group's replicas (replica ID to
// node ID): a new replica's ID is found there by its node. Call it on the
// host that leads the group (elsewhere it is a *NotLeaderError naming the
// leader). Several changes at once go through joint consensus: the call
// returns once the joint configuration is entered (outgoing replicas
// still listed), and raft leaves it on its own with the next entry the
// leader proposes; no second call is needed.
//
// An added replica must then be created on its node with JoinGroup and
// that replica ID: AddReplica does both in one call. A removed replica
// needs nothing more: it deletes itself (its data and its group on that
// host) when it applies its removal, or, if it was cut off then, when a
// member tells it (RemoveGroup on its host is only for a replica whose
// group is gone for good).
func (h *Host) ChangeMembership(ctx context.Context, groupID GroupID, changes ...Change) (map[ReplicaID]NodeID, error) {
	replicas, _, err := h.changeMembership(ctx, groupID, false, changes)
	return replicas, err
}

// AddReplica adds a replica of the group on node, in one call on the
// group's leader: it adds it as a learner (it catches up without counting
// in the quorum), creates it on node (through the admin call, or here if
// node is this host), and, for kind AddVoter, promotes it to a voter. It
// returns the new replica's ID. It may be called again after a failure
// (a timeout, the node unreachable) and resumes: a learner already there
// is reused, and a voter already there is left as it is.
//
// The promotion does not wait for the learner to catch up: until it
// does, the group's quorum counts a replica that is behind (with three
// voters becoming four, three of four must answer). A caller that wants
// the new voter caught up first adds it with AddLearner, watches Status's
// Progress, and promotes it with ChangeMembership(AddVoter).
func (h *Host) AddReplica(ctx context.Context, groupID GroupID, node NodeID, kind ChangeType) (ReplicaID, error) {
	if kind != AddVoter && kind != AddLearner {
		return 0, fmt.Errorf("%w: AddReplica of kind %v (AddVoter or AddLearner)", ErrInvalid, kind)
	}
	replicas, voter, err := h.changeMembership(ctx, groupID, true, []Change{{Type: AddLearner, Node: node}})
	if err != nil {
		return 0, err
	}
	var id ReplicaID
	for r, n := range replicas {
		if n == node {
			id = max(id, r)
		}
	}
	if id == 0 {
		return 0, fmt.Errorf("%w: group %d: the replica added on node %d is not among its replicas (removed since?)", ErrRejected, groupID, node)
	}
	if err := h.JoinGroupOn(ctx, node, groupID, id); err != nil {
		return id, fmt.Errorf("group %d: replica %d added as a learner, not created on node %d (call AddReplica again): %w", groupID, id, node, err)
	}
	if kind == AddVoter && !voter {
		if _, err := h.ChangeMembership(ctx, groupID, Change{Type: AddVoter, Node: node}); err != nil {
			return id, fmt.Errorf("group %d: replica %d on node %d created, not promoted (call AddReplica again): %w", groupID, id, node, err)
		}
	}
	return id, nil
}

// changeMembership is ChangeMembership; with keepVoters, adding a learner
// on a node that has a voter changes nothing (instead of demoting it),
// and voter says so.
func (h *Host) changeMembership(ctx context.Context, groupID GroupID, keepVoters bool, changes []Change) (_ map[ReplicaID]NodeID, voter bool, _ error) {
	if err := h.usable(); err != nil {
		return nil, false, err
	}
	if len(changes) == 0 {
		return nil, false, fmt.Errorf("%w: no membership change", ErrInvalid)
	}
	g := h.group(groupID)
	if g == nil {
		return nil, false, fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if !g.serving.Load() {
		if err := g.closed(); err != nil {
			return nil, false, err
		}
		return nil, false, g.notLeader()
	}
	p := &proposal{id: h.nextProposal.Add(1), start: time.Now(), done: make(chan proposalResult, 1)}
	g.mu.Lock()
	if err := g.admitLocked(len(g.mu.confChanges), "membership"); err != nil {
		g.mu.Unlock()
		return nil, false, err
	}
	g.mu.confChanges = append(g.mu.confChanges, &confChangeRequest{changes: changes, p: p, keepVoters: keepVoters})
	g.mu.Unlock()
	h.sched.Enqueue(g.id, scheduler.Requests)
	select {
	case r := <-p.done:
		if r.err != nil {
			return nil, false, r.err
		}
		return typedReplicas(r.replicas), r.noop, nil
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: %w", ErrAmbiguous, ctx.Err())
	}
}

// proposeConfChanges turns requests into ConfChangeV2 entries, and
// returns the proposals raft took. Replica IDs for new replicas come from
// the group's replicated next replica ID. Raft takes one membership change
// at a time: a second one proposed before the first applies is appended
// as an empty entry instead, which rejectRefusedConfChanges finds.
func (g *group) proposeConfChanges(reqs []*confChangeRequest) []*proposal {
	var proposed []*proposal
	for _, r := range reqs {
		if !g.serving.Load() {
			r.p.finish(Result{}, g.notLeader())
			continue
		}
		cc, err := g.buildConfChange(r)
		if err != nil {
			r.p.finish(Result{}, err)
			continue
		}
		if len(cc.Changes) == 0 { // nothing to change (keepVoters)
			r.p.replicas, r.p.noop = maps.Clone(g.replicas), true
			r.p.finish(Result{}, nil)
			continue
		}
		if err := g.rn.ProposeConfChange(cc); err != nil {
			r.p.finish(Result{}, fmt.Errorf("%w: %w", ErrRejected, err))
			continue
		}
		g.addPending(r.p)
		proposed = append(proposed, r.p)
	}
	return proposed
}

// rejectRefusedConfChanges fails, definitely, the membership changes of
// this pass that raft replaced with an empty entry. Raft appends what it
// takes to its log at once, and the pass handles every Ready, so by now
// each accepted change has been seen in the new entries (notePositions
// set its index); one that was not is not in the log.
func (g *group) rejectRefusedConfChanges(proposed []*proposal) {
	for _, p := range proposed {
		if _, waiting := g.pending[p.id]; !waiting || p.index != 0 {
			continue
		}
		delete(g.pending, p.id)
		p.finish(Result{}, fmt.Errorf("%w: group %d: another membership change is still pending (or a joint configuration is being left); retry once it applies", ErrRejected, g.id))
	}
}

func (g *group) buildConfChange(r *confChangeRequest) (*pb.ConfChangeV2, error) {
	next := g.nextReplicaID
	var adds [][2]uint64 // (replica, node)
	cc := &pb.ConfChangeV2{}
	seen := make(map[NodeID]bool, len(r.changes))
	for _, c := range r.changes {
		switch {
		case c.Node == 0:
			return nil, fmt.Errorf("%w: node 0 in a membership change of group %d; nodes are numbered from 1", ErrInvalid, g.id)
		case seen[c.Node]:
			return nil, fmt.Errorf("%w: node %d twice in one membership change of group %d", ErrInvalid, c.Node, g.id)
		}
		seen[c.Node] = true
		existing := g.replicaOn(uint64(c.Node))
		var single *pb.ConfChangeSingle
		switch c.Type {
		case AddVoter, AddLearner:
			t := pb.ConfChangeAddNode
			if c.Type == AddLearner {
				t = pb.ConfChangeAddLearnerNode
			}
			if r.keepVoters && c.Type == AddLearner && existing != 0 && slices.Contains(g.confState.GetVoters(), existing) {
				continue
			}
			replica := existing
			if replica == 0 {
				replica = next
				next++
				adds = append(adds, [2]uint64{replica, uint64(c.Node)})
			}
			single = &pb.ConfChangeSingle{Type: t.Enum(), NodeId: new(replica)}
		case RemoveReplica:
			if existing == 0 {
				return nil, fmt.Errorf("%w: group %d has no replica on node %d", ErrInvalid, g.id, c.Node)
			}
			single = &pb.ConfChangeSingle{Type: pb.ConfChangeRemoveNode.Enum(), NodeId: new(existing)}
		default:
			return nil, fmt.Errorf("%w: change type %d", ErrInvalid, c.Type)
		}
		cc.Changes = append(cc.Changes, single)
	}
	cc.Context = encodeConfContext(r.p.id, adds)
	return cc, nil
}

// The context of a ConfChangeV2 carries the proposal ID and, for each new
// replica, the node that hosts it: every replica learns the mapping from
// the replicated log.
//
//	id:uvarint count:uvarint (replica:uvarint node:uvarint)...
func encodeConfContext(id uint64, adds [][2]uint64) []byte {
	b := binary.AppendUvarint(nil, id)
	b = binary.AppendUvarint(b, uint64(len(adds)))
	for _, a := range adds {
		b = binary.AppendUvarint(b, a[0])
		b = binary.AppendUvarint(b, a[1])
	}
	return b
}

func decodeConfContext(b []byte) (id uint64, adds [][2]uint64, err error) {
	if len(b) == 0 {
		return 0, nil, nil // raft's own empty change (leaving a joint config)
	}
	id, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, fmt.Errorf("multiraft: bad conf change context")
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return 0, nil, fmt.Errorf("multiraft: bad conf change context")
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		r, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return 0, nil, fmt.Errorf("multiraft: bad conf change context")
		}
		node, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 {
			return 0, nil, fmt.Errorf("multiraft: bad conf change context")
		}
		adds = append(adds, [2]uint64{r, node})
		b = b[k1+k2:]
	}
	return id, adds, nil
}

// decodeConfChange decodes a membership change entry (either version) and
// its context.
func decodeConfChange(e *pb.Entry) (cc pb.ConfChangeI, id uint64, adds [][2]uint64, err error) {
	var ctx []byte
	switch e.GetType() {
	case pb.EntryConfChange:
		v1 := &pb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), v1); err != nil {
			return nil, 0, nil, err
		}
		cc, ctx = v1, v1.GetContext()
	default:
		v2 := &pb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), v2); err != nil {
			return nil, 0, nil, err
		}
		cc, ctx = v2, v2.GetContext()
	}
	id, adds, err = decodeConfContext(ctx)
	return cc, id, adds, err
}

// confChangeID returns the proposal ID of a conf change entry, 0 if none.
func confChangeID(e *pb.Entry) uint64 {
	cc := &pb.ConfChangeV2{}
	if proto.Unmarshal(e.GetData(), cc) != nil {
		return 0
	}
	id, _, _ := decodeConfContext(cc.GetContext())
	return id
}

// applyConfChange applies a committed membership change: raft's
// configuration, the replica-to-node map, the next replica ID. It reports
// whether this host's replica was removed.
func (g *group) applyConfChange(e *pb.Entry) (removedSelf bool, err error) {
	cc, id, adds, err := decodeConfChange(e)
	if err != nil {
		return false, err
	}
	for _, a := range adds {
		g.replicas[a[0]] = a[1]
		g.nextReplicaID = max(g.nextReplicaID, a[0]+1)
	}
	g.confState = g.rn.ApplyConfChange(cc)
	members := map[uint64]bool{}
	for _, set := range [][]uint64{g.confState.GetVoters(), g.confState.GetLearners(), g.confState.GetVotersOutgoing(), g.confState.GetLearnersNext()} {
		for _, r := range set {
			members[r] = true
		}
	}
	for r := range g.replicas {
		if !members[r] {
			delete(g.replicas, r)
		}
	}
	g.replicasVersion++
	g.noteLeaderNode() // a joining replica may learn its leader's node only now
	if g.h.subscribed() {
		g.h.emit(Event{Kind: EventMembershipChanged, GroupID: GroupID(g.id), Replicas: g.replicaNodes(), Index: e.GetIndex(), Term: e.GetTerm()})
	}
	if p, ok := g.pending[id]; ok {
		delete(g.pending, id)
		p.replicas = maps.Clone(g.replicas)
		g.acks = append(g.acks, parkedAck{p: p, res: Result{Index: e.GetIndex()}})
	}
	return !members[g.replicaID], nil
}
