package multiraft

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/flotilla-io/flotilla/proto/peerpb"
	"github.com/flotilla-io/flotilla/transport"
)

// Host-to-host control calls.
//
// A node that creates a group (a broker's partition) on several nodes asks
// each of them over the transport's admin call; the *On methods make the
// call, HandleAdmin serves it. Creating is idempotent: a replica that
// already exists answers success, so a caller can retry after a timeout.

// handleAdmin serves a peer's control call (transport.Handler, through
// hostPorts).
func (h *Host) handleAdmin(ctx context.Context, from transport.NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	var err error
	switch r := req.GetRequest().(type) {
	case *peerpb.AdminRequest_CreateReplica:
		c := r.CreateReplica
		if c.GetReplicaId() != 0 {
			err = h.joinGroup(GroupID(c.GetGroupId()), ReplicaID(c.GetReplicaId()), c.GetReplicas())
			if g := h.group(GroupID(c.GetGroupId())); errors.Is(err, ErrGroupExists) && g != nil && g.replicaID != c.GetReplicaId() {
				// Another replica of the group lives here (one removed while
				// this node was down, not yet collected): the one asked for
				// does not exist, and must not be counted on.
				return nil, fmt.Errorf("%w: node %d hosts replica %d of group %d, not replica %d: remove it (RemoveGroup on this node) and add the replica again",
					ErrInvalid, h.cfg.NodeID, g.replicaID, c.GetGroupId(), c.GetReplicaId())
			}
		} else {
			members := make([]NodeID, len(c.GetMembers()))
			for i, n := range c.GetMembers() {
				members[i] = NodeID(n)
			}
			err = h.CreateGroup(GroupID(c.GetGroupId()), members)
		}
		if errors.Is(err, ErrGroupExists) {
			err = nil
		}
	case *peerpb.AdminRequest_RemoveReplica:
		err = h.RemoveGroup(ctx, GroupID(r.RemoveReplica.GetGroupId()))
		if errors.Is(err, ErrGroupNotFound) {
			err = nil
		}
	case *peerpb.AdminRequest_Propose:
		var res Result
		if res, err = h.Propose(ctx, GroupID(r.Propose.GetGroupId()), r.Propose.GetData()); err == nil {
			return &peerpb.AdminResponse{Result: res.Value}, nil
		}
	default:
		err = fmt.Errorf("%w: unknown admin request from node %d", ErrInvalid, from)
	}
	switch {
	case errors.Is(err, ErrNoSpace):
		// The caller's node tells its client why, and that it may retry.
		return nil, fmt.Errorf("%w: %w", transport.ErrExhausted, err)
	case err != nil:
		return nil, err
	}
	return &peerpb.AdminResponse{}, nil
}

// CreateGroupOn creates node's founding replica of a group (see
// CreateGroup), on this host or, through the transport, on a peer.
func (h *Host) CreateGroupOn(ctx context.Context, node NodeID, groupID GroupID, members []NodeID) error {
	if err := checkOn(node, groupID); err != nil {
		return err
	}
	ids := make([]uint64, len(members))
	for i, n := range members {
		if n == 0 {
			return fmt.Errorf("%w: node 0 among the members of group %d", ErrInvalid, groupID)
		}
		ids[i] = uint64(n)
	}
	if !slices.Contains(members, node) {
		return fmt.Errorf("%w: node %d is not among the members %v of group %d", ErrInvalid, node, members, groupID)
	}
	return h.adminOn(ctx, node, &peerpb.AdminRequest{Request: &peerpb.AdminRequest_CreateReplica{
		CreateReplica: &peerpb.CreateReplica{GroupId: uint64(groupID), Members: ids}}})
}

// JoinGroupOn creates node's joining replica of a group (see JoinGroup).
// If this host hosts the group, the new replica is told who hosts which
// of its replicas, so that it takes messages only from them even before
// its snapshot arrives (admit.go).
func (h *Host) JoinGroupOn(ctx context.Context, node NodeID, groupID GroupID, replicaID ReplicaID) error {
	if err := checkOn(node, groupID); err != nil {
		return err
	}
	if replicaID == 0 {
		return fmt.Errorf("%w: replica ID 0 for group %d; replica IDs are numbered from 1 (the leader's ChangeMembership allots them)", ErrInvalid, groupID)
	}
	var seed map[uint64]uint64
	if st, err := h.Status(groupID); err == nil {
		seed = make(map[uint64]uint64, len(st.Replicas))
		for r, n := range st.Replicas {
			seed[uint64(r)] = uint64(n)
		}
	}
	return h.adminOn(ctx, node, &peerpb.AdminRequest{Request: &peerpb.AdminRequest_CreateReplica{
		CreateReplica: &peerpb.CreateReplica{GroupId: uint64(groupID), ReplicaId: uint64(replicaID), Replicas: seed}}})
}

// ProposeOn proposes data to a group through its replica on node (this
// host's own or a peer's), which must lead the group, and returns what
// its apply returned there. It is for control commands a caller must get
// into a group from wherever it runs (a partition's retention, set by
// whichever node an operator asked); a peer's refusal, not leading the
// group among them, is ErrPeer with its reason as text.
func (h *Host) ProposeOn(ctx context.Context, node NodeID, groupID GroupID, data []byte) ([]byte, error) {
	if err := checkOn(node, groupID); err != nil {
		return nil, err
	}
	resp, err := h.adminCall(ctx, node, &peerpb.AdminRequest{Request: &peerpb.AdminRequest_Propose{
		Propose: &peerpb.Propose{GroupId: uint64(groupID), Data: data}}})
	return resp.GetResult(), err
}

// RemoveGroupOn removes node's replica of a group (see RemoveGroup).
func (h *Host) RemoveGroupOn(ctx context.Context, node NodeID, groupID GroupID) error {
	if err := checkOn(node, groupID); err != nil {
		return err
	}
	return h.adminOn(ctx, node, &peerpb.AdminRequest{Request: &peerpb.AdminRequest_RemoveReplica{
		RemoveReplica: &peerpb.RemoveReplica{GroupId: uint64(groupID)}}})
}

// checkOn refuses here what a peer would refuse: the answer must not
// depend on the transport.
func checkOn(node NodeID, groupID GroupID) error {
	switch {
	case node == 0:
		return fmt.Errorf("%w: node 0; nodes are numbered from 1", ErrInvalid)
	case groupID == 0:
		return fmt.Errorf("%w: group ID 0 is reserved; groups are numbered from 1", ErrInvalid)
	}
	return nil
}

// adminOn makes a control call on a node: this host's own, or a peer's.
// A peer's answer is ErrPeer (ErrNoSpace if it is short of space), with
// transport.ErrUnknownPeer when it could not be reached, whichever the
// transport: its own error chain is only text here, as it would be over
// the wire (a peer's ErrStopped is not this host's).
func (h *Host) adminOn(ctx context.Context, node NodeID, req *peerpb.AdminRequest) error {
	_, err := h.adminCall(ctx, node, req)
	return err
}

func (h *Host) adminCall(ctx context.Context, node NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	if err := h.usable(); err != nil {
		return nil, err
	}
	if node == h.cfg.NodeID {
		return h.handleAdmin(ctx, uint64(node), req)
	}
	resp, err := h.trans.Admin(ctx, uint64(node), req)
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, transport.ErrUnknownPeer):
		return nil, fmt.Errorf("%w: %w: node %d: %v", ErrPeer, transport.ErrUnknownPeer, node, err)
	case errors.Is(err, transport.ErrExhausted):
		return nil, fmt.Errorf("%w: node %d: %v", ErrNoSpace, node, err)
	default:
		return nil, fmt.Errorf("%w: node %d refused: %v", ErrPeer, node, err)
	}
}
