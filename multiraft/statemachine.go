package multiraft

import "io"

// Command is one proposal as the state machine sees it: its log position
// (entry index and slot in the entry: a worker packs a group's queued
// proposals into one entry) and its data.
type Command struct {
	Index uint64
	Slot  int
	Data  []byte
}

// StateMachine is a group's in-memory state machine. The host calls it from
// the worker that owns the group, one call at a time, in log order.
//
// It must be deterministic: every replica applies the same commands in the
// same order and must end in the same state.
type StateMachine interface {
	// Apply applies committed commands in order and returns one result per
	// command (handed to the proposer on this host, if any). An error is
	// fatal to the host: a replica that cannot apply a committed command
	// cannot go on.
	Apply(cmds []Command) ([][]byte, error)
	// Snapshot writes the whole state.
	Snapshot(w io.Writer) error
	// Restore replaces the state with one written by Snapshot.
	Restore(r io.Reader) error
}

// StateMachineFactory makes the state machine of a group hosted here.
type StateMachineFactory func(groupID uint64) StateMachine
