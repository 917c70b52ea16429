// Package scheduler drives every group of a host from a fixed pool of
// workers, so that a group costs nothing when it has nothing to do: no
// goroutine, no timer, no channel of its own.
//
// # What it owns
//
// Work flags. Each group has a set of flags (Messages, Requests, Tick,
// Storage, Control) saying what kind of work waits for it. Enqueue raises flags;
// raising a flag that is already raised does nothing except that ticks are
// counted. A group with raised flags sits in the run queue at most once,
// and a group is never processed by two workers at once: flags raised while
// a worker processes it are kept and the group goes to the back of the
// queue when the worker is done (FIFO fairness). A group whose flags are all
// cleared is forgotten, so an idle group takes no memory here.
//
// Lanes. Groups marked with SetPriority (the embedder's system groups) are
// queued in a lane that workers always serve first. Then comes the control
// lane: groups whose only work is the failure detector's messages (the
// Control flag: heartbeats, votes; not ticks, which must wait as long for
// a follower as for its busy leader), and groups marked with SetUrgent
// (the host marks those without a leader or in an election). Everything
// else waits in the normal lane. A group's lane is chosen when it is
// queued, and work raised while it waits rides along, so it sits in one
// lane at a time; only SetUrgent and EnqueueUrgent (the host's news that
// a peer's node stopped being live) move a group waiting in the normal
// lane to the control lane, leaving behind an entry that is skipped.
//
// The tick loop. One goroutine, driven by the host's Clock, raises the Tick
// flag of every group marked with SetTicking, once per TickInterval. It
// never processes a group itself, so a slow group never delays another
// group's tick; a group that was busy receives the count of ticks it
// missed. A loop that falls behind counts the ticks it lost.
//
// # Goroutines
//
// Workers (Config.Workers of them) and the tick loop, all started by Start
// and stopped by Close. Processor.Process runs on a worker.
//
// # Bounds
//
// The run queues hold each group at most once, so their length is bounded
// by the number of groups; the per-group state is a map entry that exists
// only while the group has work.
package scheduler
