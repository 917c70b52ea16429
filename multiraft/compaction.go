package multiraft

// Durable snapshots and log truncation.
//
// An in-memory state machine is made durable by snapshots: every
// SnapshotEntries applied entries, the worker serializes it and commits the
// serialization together with the applied state it reflects (one apply
// batch). On restart the state machine is restored from the last one and
// raft replays the log after it; so the log is never truncated past it.
// Truncation keeps LogTailEntries below that point for followers that lag
// a little, and never passes the index of a snapshot still being sent (the
// follower will need the entries after it).
//
// A state machine that reads its commands back from the log (LogRetainer)
// owns its log instead: the log is truncated to just below RetainFrom as
// soon as that moves (its records leave the disk when they leave the
// state machine), with no tail: a follower further behind needs a
// snapshot anyway, as what it misses is no longer the state machine's.
// A truncation cut short by a snapshot in flight is taken up again when
// the send ends; one a busy log writer refused, at the next pass.

// maybeSnapshot takes a durable snapshot when enough was applied since
// the last (an on-disk state machine is durable at every apply: it only
// truncates), then truncates the log.
func (g *group) maybeSnapshot() {
	if g.sm.retainFrom() > 0 {
		g.diskDurable()
		return
	}
	if g.applied < g.durable+g.snapshotEntries() {
		return
	}
	g.startSnapshot() // persist.go
}

// diskDurable truncates the log of an on-disk state machine, durable at
// every apply: below what a LogRetainer still reads, or below the applied
// index less the tail.
func (g *group) diskDurable() {
	g.durable = g.applied
	if g.sm.retainFrom() > 0 {
		g.truncateKept()
		return
	}
	g.truncate()
}

// truncateKept truncates the log of a LogRetainer to just below what it
// still needs, once per move of RetainFrom (again if a snapshot in flight
// or a busy log writer cut it short).
func (g *group) truncateKept() {
	keep := g.sm.retainFrom()
	if keep <= 1 || keep <= g.keptFrom {
		return
	}
	index := min(keep-1, g.applied)
	for _, sending := range g.sending {
		index = min(index, sending)
	}
	if last, _ := g.st.LastIndex(); index > last {
		index = last
	}
	if index == 0 || index <= g.truncQueued {
		return // nothing new (what is queued does it)
	}
	if err := g.st.Truncate(index, nil); err != nil {
		// A busy log writer: every pass tries again (and the group does
		// not quiesce) until it takes it.
		g.truncRetry = true
		g.h.log.Debug("truncate", "group", g.id, "index", index, "err", err)
		return
	}
	g.truncRetry = false
	g.truncQueued = index
	if index == keep-1 {
		g.keptFrom = keep
	}
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
