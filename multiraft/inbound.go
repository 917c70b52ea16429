package multiraft

import (
	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/transport"
	pb "go.etcd.io/raft/v3/raftpb"
)

// handleMessages queues each message on its group and raises the group's
// flag. Messages for groups not hosted here, or for another replica ID
// than the one hosted, are dropped and counted: they never create or
// resurrect a replica.
func (h *Host) handleMessages(from transport.NodeID, batch []transport.Envelope) {
	if h.usable() != nil {
		return
	}
	// The groups this frame queues (their inbox was empty), and whether it
	// brought them data or only the failure detector's messages: those go
	// to the scheduler's control lane, ahead of data. (A group queued
	// already keeps its lane; its pass steps whatever its inbox holds.)
	var queued map[uint64]bool
	for _, e := range batch {
		g := h.group(GroupID(e.GroupID))
		if g == nil {
			h.m.MessagesDropped.WithLabelValues("unknown_group").Inc()
			continue
		}
		data := !controlMessage(e.Message)
		if g.deliver(from, e) {
			if queued == nil {
				queued = make(map[uint64]bool)
			}
			queued[e.GroupID] = data
		} else if _, ok := queued[e.GroupID]; ok && data {
			queued[e.GroupID] = true
		}
	}
	var data, control []uint64
	for id, d := range queued {
		if d {
			data = append(data, id)
		} else {
			control = append(control, id)
		}
	}
	h.sched.EnqueueMany(control, scheduler.Control)
	h.sched.EnqueueMany(data, scheduler.Messages)
}

// controlMessage reports whether m is the failure detector's: a
// heartbeat or its response, a vote or pre-vote or their responses, a
// timeout-now. They are tiny, and go ahead of data in the transport, the
// inbox bounds and the scheduler.
func controlMessage(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgHeartbeat, pb.MsgHeartbeatResp, pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp, pb.MsgTimeoutNow:
		return true
	}
	return false
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
		if g.mu.unreachable == nil {
			g.mu.unreachable = make(map[uint64]struct{})
		}
		g.mu.unreachable[e.Message.GetTo()] = struct{}{}
		g.mu.Unlock()
		h.sched.Enqueue(e.GroupID, scheduler.Messages)
	}
}
