package multiraft

import pb "go.etcd.io/raft/v3/raftpb"

// SetStepHook makes every group of a host built from cfg call fn before it
// steps an inbound message; fn may panic, as raft would on a message it
// cannot take.
func SetStepHook(cfg *Config, fn func(groupID uint64, m *pb.Message)) {
	cfg.testing.beforeStep = fn
}

// SetLogQueueItems bounds the log writer's queue of a host built from cfg
// to n items, so tests fill it with a handful of appends.
func SetLogQueueItems(cfg *Config, n int) { cfg.testing.logQueueItems = n }

// UrgentGroups is how many groups the host keeps in the scheduler's
// control lane.
func UrgentGroups(h *Host) int { return h.sched.UrgentGroups() }
