package multiraft

import (
	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/transport"
)

// handleMessages queues each message on its group and raises the group's
// flag. Messages for groups not hosted here, or for another replica ID
// than the one hosted, are dropped and counted: they never create or
// resurrect a replica.
func (h *Host) handleMessages(from transport.NodeID, batch []transport.Envelope) {
	if h.usable() != nil {
		return
	}
	h.live.heard(from) // any frame, an empty one too, says its sender is alive
	var wake []uint64
	for _, e := range batch {
		g := h.group(GroupID(e.GroupID))
		if g == nil {
			h.m.MessagesDropped.WithLabelValues("unknown_group").Inc()
			continue
		}
		if g.deliver(from, e.Message, e.Quiesce) {
			wake = append(wake, e.GroupID)
		}
	}
	h.sched.EnqueueMany(wake, scheduler.Messages)
}

// handleUnreachable tells raft that the replicas the dropped messages were
// for are unreachable.
func (h *Host) handleUnreachable(_ transport.NodeID, dropped []transport.Envelope) {
	for _, e := range dropped {
		g := h.group(GroupID(e.GroupID))
		if g == nil {
			continue
		}
		g.mu.Lock()
		g.mu.unreachable[e.Message.GetTo()] = struct{}{}
		g.mu.Unlock()
		h.sched.Enqueue(e.GroupID, scheduler.Messages)
	}
}
