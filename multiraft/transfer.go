package multiraft

import (
	"context"
	"fmt"

	"github.com/flotilla-io/flotilla/scheduler"
)

// transferRequest asks the group's leader here to hand leadership to the
// replica on node target, for as long as its caller waits.
type transferRequest struct {
	target uint64 // node ID
	caller context.Context
	done   chan error
	// finished is set once the transfer is answered (by the group's owner).
	finished bool
}

// TransferLeadership asks this host, the group's leader, to hand
// leadership to the group's replica on node to, and returns once this host
// sees that replica lead (or ctx ends: the transfer may still happen). If
// raft gives the transfer up (the target did not catch up within an
// election timeout) the call waits on until ctx ends: always pass a
// deadline. A transfer whose caller has gone is dropped and raft's attempt aborted:
// while raft transfers leadership it refuses proposals, and an abandoned
// transfer must neither hold writes back nor move leadership later. A
// group has at most MaxGroupProposals transfers waiting; beyond them
// TransferLeadership is ErrBusy.
func (h *Host) TransferLeadership(ctx context.Context, groupID GroupID, to NodeID) error {
	if err := h.usable(); err != nil {
		return err
	}
	g := h.group(groupID)
	if g == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if !g.serving.Load() {
		if err := g.closed(); err != nil {
			return err
		}
		return g.notLeader()
	}
	if to == h.cfg.NodeID {
		return nil
	}
	r := &transferRequest{target: uint64(to), caller: ctx, done: make(chan error, 1)}
	g.mu.Lock()
	if err := g.admitLocked(g.mu.transferCount, "transfer"); err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.transfers = append(g.mu.transfers, r)
	g.mu.transferCount++
	g.mu.Unlock()
	h.transfersWaiting.Inc()
	h.sched.Enqueue(g.id, scheduler.Requests)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The worker drops the transfer on its next pass: let it be now.
		h.sched.Enqueue(g.id, scheduler.Requests)
		return fmt.Errorf("%w: leadership transfer: %w", ErrAmbiguous, ctx.Err())
	}
}

// finishTransfer answers a transfer once; later calls do nothing.
func (g *group) finishTransfer(r *transferRequest, err error) {
	if r.finished {
		return
	}
	r.finished = true
	r.done <- err
	g.mu.Lock()
	g.mu.transferCount--
	g.mu.Unlock()
	g.h.transfersWaiting.Dec()
}

// startTransfers hands transfer requests to raft.
func (g *group) startTransfers(rs []*transferRequest) {
	for _, r := range rs {
		replica := g.replicaOn(r.target)
		switch {
		case r.caller.Err() != nil:
			g.finishTransfer(r, r.caller.Err())
		case replica == 0:
			g.finishTransfer(r, fmt.Errorf("%w: group %d has no replica on node %d", ErrInvalid, g.id, r.target))
		case !g.serving.Load():
			g.finishTransfer(r, g.notLeader())
		default:
			g.transfers = append(g.transfers, r)
			g.rn.TransferLeader(replica)
		}
	}
}

// dropAbandonedTransfers forgets the transfers whose caller has gone and,
// if raft is transferring leadership to a replica no waiting caller wants
// any more, aborts that transfer (raft aborts a transfer when asked to
// transfer to the leader itself). It runs before proposals are handed to
// raft, which drops them while a transfer is under way.
func (g *group) dropAbandonedTransfers() {
	kept := g.transfers[:0]
	dropped := false
	for _, r := range g.transfers {
		if err := r.caller.Err(); err != nil {
			g.finishTransfer(r, err)
			dropped = true
			continue
		}
		kept = append(kept, r)
	}
	clear(g.transfers[len(kept):])
	g.transfers = kept
	if !dropped {
		return
	}
	transferee := g.rn.BasicStatus().LeadTransferee
	if transferee == 0 {
		return
	}
	for _, r := range g.transfers {
		if g.replicaOn(r.target) == transferee {
			return // still wanted
		}
	}
	g.rn.TransferLeader(g.replicaID)
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
			g.finishTransfer(r, nil)
		} else {
			kept = append(kept, r)
		}
	}
	clear(g.transfers[len(kept):])
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
