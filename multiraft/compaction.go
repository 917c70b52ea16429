package multiraft

import "fmt"

// Durable snapshots and log truncation.
//
// An in-memory state machine is made durable by snapshots: every
// SnapshotEntries applied entries, the worker serializes it and commits the
// serialization together with the applied state it reflects (one apply
// batch). On restart the state machine is restored from the last one and
// raft replays the log after it; so the log is never truncated past it.
// Truncation keeps LogTailEntries below that point for followers that lag
// a little, never passes the index of a snapshot still being sent (the
// follower will need the entries after it), and keeps what a state machine
// that reads its commands back from the log needs (LogRetainer).

// maybeSnapshot takes a durable snapshot when enough was applied since
// the last (an on-disk state machine is durable at every apply: it only
// truncates), then truncates the log.
func (g *group) maybeSnapshot() {
	if g.applied < g.durable+g.h.cfg.SnapshotEntries {
		// A state machine that reads the log back frees it as its
		// retention moves, not SnapshotEntries later: its records are the
		// log, and they should leave the disk when they leave the
		// partition.
		if keep := g.sm.retainFrom(); keep > g.keptFrom && g.sm.persistsApplied() {
			g.keptFrom = keep
			g.durable = g.applied
			g.truncate()
		}
		return
	}
	if !g.sm.persistsApplied() {
		b := g.st.NewApplyBatch()
		if err := g.sm.save(b); err != nil {
			b.Close()
			g.h.fail(fmt.Errorf("multiraft: group %d: snapshot state machine: %w", g.id, err))
			return
		}
		b.SetApplied(g.appliedState())
		if err := b.Commit(); err != nil {
			g.h.fail(fmt.Errorf("multiraft: group %d: durable snapshot: %w", g.id, err))
			return
		}
	}
	g.durable = g.applied
	g.truncate()
}

// truncate removes the log below the durable snapshot, less the tail.
func (g *group) truncate() {
	if g.durable <= g.h.cfg.LogTailEntries {
		return
	}
	index := g.durable - g.h.cfg.LogTailEntries
	for _, sending := range g.sending {
		index = min(index, sending)
	}
	if keep := g.sm.retainFrom(); keep > 0 {
		if keep <= 1 {
			return
		}
		index = min(index, keep-1)
	}
	if last, _ := g.st.LastIndex(); index > last {
		index = last
	}
	if first, _ := g.st.FirstIndex(); index < first {
		return
	}
	if err := g.st.Truncate(index, nil); err != nil {
		// Busy is fine: the next snapshot truncates further.
		g.h.log.Debug("truncate", "group", g.id, "index", index, "err", err)
	}
}
