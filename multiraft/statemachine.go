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
// the worker that owns the group (one of the scheduler's goroutines, not
// the proposer's), one call at a time, in log order: Apply, Snapshot and
// Restore never run concurrently with each other, nor with the functions
// given to Host.Read and Host.StaleRead, which run there too. Reading the
// state from any other goroutine (after ReadIndex, say) races Apply and
// needs a lock of the state machine's own: Read needs none.
//
// It must be deterministic: every replica applies the same commands in the
// same order and must end in the same state.
type StateMachine interface {
	// Apply applies committed commands in order and returns one result per
	// command (handed to the proposer on this host, if any). An error is
	// fatal to the host: a replica that cannot apply a committed command
	// cannot go on.
	Apply(cmds []Command) ([][]byte, error)
	// Snapshot writes the whole state, on the worker: the group waits
	// until it returns (implement Snapshotter to write off the worker).
	// The host holds what it writes in
	// memory to send it to a follower, and the follower reads it whole
	// again to Restore (it stages it on disk in between): the in-memory
	// kind is for state that fits in memory a few times over. Large state
	// belongs in a DiskStateMachine, whose snapshots stream from a Pebble
	// view to the follower's disk.
	Snapshot(w io.Writer) error
	// Restore replaces the state with one written by Snapshot.
	Restore(r io.Reader) error
}

// SnapshotMeta says where a snapshot stands in its group's log: the
// state reflects every entry up to Index, of term Term.
type SnapshotMeta struct {
	GroupID     GroupID
	Index, Term uint64
}

// Snapshotter is implemented by an in-memory state machine that can take
// a snapshot without holding its group up. PrepareSnapshot runs on the
// group's worker between two Apply calls, as Snapshot would, but only
// captures the state as of meta (a copy-on-write root, an immutable
// version, a copy of a small index) and returns a function that writes
// it. The host calls that function once, on another goroutine, while the
// group goes on applying: it must write the state as of meta, whatever
// Apply does meanwhile, in Snapshot's format (Restore reads it). The host
// uses it for durable snapshots and for snapshots sent to followers;
// Snapshot is then not called.
type Snapshotter interface {
	PrepareSnapshot(meta SnapshotMeta) (write func(w io.Writer) error, err error)
}

// StateMachineFactory makes the state machine of a group hosted here. It
// is called once per replica and host incarnation: by NewHost for each
// group found in the directory (an in-memory machine is then restored
// from the group's last durable snapshot, if any, and the log after it
// replayed into it), and by CreateGroup and JoinGroup (also when a peer's
// AddReplica or JoinGroupOn asks this host, on the transport's
// goroutine). Calls for different groups may run concurrently: a factory
// that records the machines it makes (to read them in Read's functions)
// needs a lock for its record.
type StateMachineFactory func(groupID GroupID) StateMachine

// DiskStateMachine is a group's on-disk state machine: its data lives in
// the host's Pebble, under the group's key span, and each Apply's writes
// commit in one batch with the group's applied index, so after a crash no
// entry is applied twice or skipped. It is called like StateMachine: from
// the worker that owns the group, one call at a time, in log order, and it
// must be deterministic.
type DiskStateMachine interface {
	// Apply applies committed commands, writing through w, and returns one
	// result per command. Reads through the Reader the factory was given
	// see the state before this call's writes. An error is fatal to the
	// host.
	Apply(w Writer, cmds []Command) ([][]byte, error)
}

// DiskRestorer is implemented by an on-disk state machine that keeps what
// it read in memory between Apply calls (Apply is the only writer of its
// data, so such a cache stays true): Restored is called, on the group's
// worker and before the next Apply, once a snapshot replaced the data.
type DiskRestorer interface {
	Restored()
}

// DiskStateMachineFactory makes the on-disk state machine of a group; r
// reads the group's data (from any goroutine).
type DiskStateMachineFactory func(groupID GroupID, r Reader) DiskStateMachine

// Writer writes a group's state machine data. Keys are the state
// machine's own; the host keeps each group's under its own prefix.
type Writer interface {
	Set(key, value []byte)
	Delete(key []byte)
	DeleteRange(start, end []byte)
}

// Reader reads a group's state machine data.
type Reader interface {
	// Get returns a copy of the value of key; found is false if absent.
	Get(key []byte) (value []byte, found bool, err error)
	// Scan calls fn for each key in [start, end) in order (nil end: to
	// the end) until fn returns false; key and value are valid only
	// during the call.
	Scan(start, end []byte, fn func(key, value []byte) bool) error
	// ScanReverse is Scan in descending key order.
	ScanReverse(start, end []byte, fn func(key, value []byte) bool) error
}
