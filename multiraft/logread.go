package multiraft

import (
	"fmt"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/store"
)

// Reading the log back.
//
// A state machine whose data is the log itself (a message broker's
// partition: its records are the commands) need not copy every command at
// apply: it can keep where each one is and read it back from the Raft log,
// which is written once, synced, and replicated anyway. The Reader given
// to a DiskStateMachineFactory is also a LogReader for that, and the host
// keeps the log a LogRetainer says it needs instead of truncating it once
// applied: such a group's log is as long as its state machine's retention.
// A follower too far behind for the leader's log then gets a snapshot
// that carries the kept entries with the state machine's data, and keeps
// them below its own truncation.

// LogReader reads the commands of a group's applied entries. The Reader a
// DiskStateMachineFactory is given implements it.
type LogReader interface {
	// ReadCommands calls fn for each command of the applied entries in
	// [lo, hi), in log order, until fn returns false. Entries without
	// commands (a leader's empty entry, membership changes) and entries
	// the host no longer keeps are skipped: the caller sees what is
	// missing by index. Data is valid only during the call.
	ReadCommands(lo, hi uint64, fn func(c Command) bool) error
}

// LogRetainer is implemented by an on-disk state machine that reads its
// commands back from the log (LogReader): the host keeps every entry from
// RetainFrom on, through truncation and in snapshots for followers.
type LogRetainer interface {
	// RetainFrom returns the index of the first entry the state machine
	// still needs; 0 if it needs none. The host calls it on the group's
	// worker, between applies.
	RetainFrom() uint64
}

// groupReader is the Reader a DiskStateMachineFactory gets: the group's
// storage, which also reads its log back, up to the last entry handed to
// the state machine.
type groupReader struct {
	*store.GroupStorage
	readable *atomic.Uint64
}

var _ LogReader = groupReader{}

func (g *group) reader() groupReader { return groupReader{GroupStorage: g.st, readable: &g.readable} }

func (r groupReader) ReadCommands(lo, hi uint64, fn func(c Command) bool) error {
	hi = min(hi, r.readable.Load()+1) // never an entry that may still change
	var derr error
	err := r.ReadLog(lo, hi, func(index uint64, typ pb.EntryType, data []byte) bool {
		if typ != pb.EntryType_EntryNormal || len(data) == 0 {
			return true
		}
		more := true
		if err := decodeBatch(data, func(slot int, _ uint64, d []byte) {
			if more {
				more = fn(Command{Index: index, Slot: slot, Data: d})
			}
		}); err != nil {
			derr = fmt.Errorf("%w: entry %d: %w", ErrInvalid, index, err)
			return false
		}
		return more
	})
	if err == nil {
		err = derr
	}
	return err
}
