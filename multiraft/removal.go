package multiraft

import (
	"context"
	"fmt"

	"go.etcd.io/raft/v3"

	"github.com/flotilla-io/flotilla/scheduler"
)

// RemoveGroup removes this host's replica of a group: its data is deleted
// and a tombstone keeps its replica ID (and every lower one) from ever
// being hosted here again. The removal runs on the worker that owns the
// group, after what it is doing; proposals still waiting fail as
// ambiguous.
func (h *Host) RemoveGroup(ctx context.Context, groupID GroupID) error {
	if err := h.usable(); err != nil {
		return err
	}
	g := h.group(groupID)
	if g == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	done := make(chan error, 1)
	g.mu.Lock()
	if err := g.mu.refuseRemoval; err != nil {
		g.mu.Unlock()
		return err
	}
	g.mu.remove = append(g.mu.remove, done)
	g.mu.Unlock()
	h.sched.Enqueue(g.id, scheduler.Requests)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: removal of group %d: %w", ErrAmbiguous, groupID, ctx.Err())
	}
}

// removeGroup takes a group off the host and out of the store, on the
// worker that owns it (or while no worker can). A replica removed by a
// membership change comes here too, once it applies its own removal.
// Proposals handed to raft fail as ambiguous (they may apply on the other
// replicas); every other request fails as ErrGroupNotFound.
func (h *Host) removeGroup(g *group) error {
	if g.removed {
		return nil
	}
	g.removed = true
	g.leaveQuiescence()
	if g.role == raft.StateLeader && g.failed == nil {
		g.wakeFollowers() // they may be quiesced, and this node stays live
	}
	h.sched.Remove(g.id)
	h.groups.Lock()
	if h.groups.m[g.id] == g {
		delete(h.groups.m, g.id)
		h.m.Groups.Dec()
		if st := g.status.Load(); st != nil && !g.broken.Load() {
			h.m.GroupsByRole.WithLabelValues(st.Role.String()).Dec()
		}
	}
	h.groups.Unlock()
	h.passWriterWake(g) // out of the host's groups: no wake comes after this
	if g.serving.Load() {
		g.serving.Store(false)
		h.m.Leaders.Dec()
	}
	if g.failed != nil {
		g.failed = nil
		h.m.GroupsFailed.Dec()
	}
	gone := fmt.Errorf("%w: group %d was removed", ErrGroupNotFound, g.id)
	g.failWaiting(fmt.Errorf("%w: group %d was removed", ErrAmbiguous, g.id), gone)
	err := h.store.RemoveGroup(g.id, g.replicaID+1)
	if err != nil {
		err = fmt.Errorf("%w: remove group %d: %w", storeSentinel(err), g.id, err)
	}
	g.answerRemovals(err, gone)
	if err == nil {
		h.cfg.Events.GroupRemoved(GroupID(g.id))
		h.emit(Event{Kind: EventGroupRemoved, GroupID: GroupID(g.id)})
	}
	return err
}
