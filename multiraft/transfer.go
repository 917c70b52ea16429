package multiraft

import (
	"context"
	"fmt"

	"github.com/flotilla-io/flotilla/scheduler"
)

// transferRequest asks the group's leader here to hand leadership to the
// replica on node target.
type transferRequest struct {
	target uint64 // node ID
	done   chan error
}

// TransferLeadership asks this host, the group's leader, to hand
// leadership to the group's replica on node to, and returns once this host
// sees that replica lead (or ctx ends: the transfer may still happen).
func (h *Host) TransferLeadership(ctx context.Context, groupID, to uint64) error {
	if err := h.usable(); err != nil {
		return err
	}
	g := h.group(groupID)
	if g == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if !g.serving.Load() {
		return &NotLeaderError{GroupID: groupID, Leader: g.leaderNode.Load()}
	}
	if to == h.cfg.NodeID {
		return nil
	}
	r := &transferRequest{target: to, done: make(chan error, 1)}
	g.mu.Lock()
	if err := g.fullLocked(len(g.mu.transfers), "transfers"); err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.transfers = append(g.mu.transfers, r)
	g.mu.Unlock()
	h.sched.Enqueue(groupID, scheduler.Requests)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: leadership transfer: %w", ErrAmbiguous, ctx.Err())
	}
}

// startTransfers hands transfer requests to raft.
func (g *group) startTransfers(rs []*transferRequest) {
	for _, r := range rs {
		replica := g.replicaOn(r.target)
		switch {
		case replica == 0:
			r.done <- fmt.Errorf("%w: group %d has no replica on node %d", ErrInvalid, g.id, r.target)
		case !g.serving.Load():
			r.done <- &NotLeaderError{GroupID: g.id, Leader: g.leaderNode.Load()}
		default:
			g.transfers = append(g.transfers, r)
			g.rn.TransferLeader(replica)
		}
	}
}

// retryTransfers asks raft again for a transfer it gave up on (raft
// abandons a transfer after an election timeout, for instance while the
// target was still catching up); the caller's context bounds the wait.
func (g *group) retryTransfers() {
	if len(g.transfers) == 0 {
		return
	}
	if !g.serving.Load() {
		return // leadership is moving: wait to see where it lands
	}
	if g.rn.BasicStatus().LeadTransferee != 0 {
		return // one is under way
	}
	if replica := g.replicaOn(g.transfers[0].target); replica != 0 {
		g.rn.TransferLeader(replica)
	}
}

// leaderIs completes the transfers that wanted the new leader.
func (g *group) leaderIs(node uint64) {
	kept := g.transfers[:0]
	for _, r := range g.transfers {
		if r.target == node {
			r.done <- nil
		} else {
			kept = append(kept, r)
		}
	}
	g.transfers = kept
}

// replicaOn returns the ID of the group's replica on a node, 0 if none.
func (g *group) replicaOn(node uint64) uint64 {
	for replica, n := range g.replicas {
		if n == node {
			return replica
		}
	}
	return 0
}
