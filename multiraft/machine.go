package multiraft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/flotilla-io/flotilla/store"
)

// machine adapts the two kinds of state machine to what a group's worker
// needs: applying, making the applied state durable, and moving the whole
// state in and out as a snapshot.
//
// The in-memory kind is durable through its snapshots: its applied state
// is written only with a serialization of it, every SnapshotEntries
// entries, and on restart raft replays the log after that. The on-disk
// kind writes its data and the applied state in one batch per apply, so
// its applied state is always durable.
type machine interface {
	// apply runs commands; an on-disk machine writes into b.
	apply(b *store.ApplyBatch, cmds []Command) ([][]byte, error)
	// persistsApplied reports whether every apply batch records the
	// applied state (on-disk) or only snapshots do (in-memory).
	persistsApplied() bool
	// save writes a durable snapshot of the state into b (in-memory only).
	save(b *store.ApplyBatch) error
	// snapshot returns the applied state and a writer of the state's data
	// for a follower, and a release to call once the send is over.
	snapshot(g *group) (store.AppliedState, func(io.Writer) error, func(), error)
	// install writes a received state into the store's snapshot table and
	// loads it.
	install(w *store.SnapshotWriter, data []byte) error
	restore(data []byte) error
}

func (h *Host) newMachine(g *group) machine {
	if h.cfg.DiskStateMachine != nil {
		return diskMachine{sm: h.cfg.DiskStateMachine(GroupID(g.id), g.st)}
	}
	return memMachine{sm: h.cfg.StateMachine(GroupID(g.id))}
}

type memMachine struct{ sm StateMachine }

func (m memMachine) apply(_ *store.ApplyBatch, cmds []Command) ([][]byte, error) {
	return m.sm.Apply(cmds)
}

func (memMachine) persistsApplied() bool { return false }

func (m memMachine) save(b *store.ApplyBatch) error {
	var buf bytes.Buffer
	if err := m.sm.Snapshot(&buf); err != nil {
		return err
	}
	b.SetStateSnapshot(buf.Bytes())
	return nil
}

func (m memMachine) snapshot(g *group) (store.AppliedState, func(io.Writer) error, func(), error) {
	var buf bytes.Buffer
	if err := m.sm.Snapshot(&buf); err != nil {
		return store.AppliedState{}, nil, nil, err
	}
	write := func(w io.Writer) error { _, err := w.Write(buf.Bytes()); return err }
	return g.appliedState(), write, func() {}, nil
}

func (m memMachine) install(w *store.SnapshotWriter, data []byte) error {
	return w.SetStateSnapshot(data)
}

func (m memMachine) restore(data []byte) error { return m.sm.Restore(bytes.NewReader(data)) }

type diskMachine struct{ sm DiskStateMachine }

func (m diskMachine) apply(b *store.ApplyBatch, cmds []Command) ([][]byte, error) {
	return m.sm.Apply(b, cmds)
}

func (diskMachine) persistsApplied() bool        { return true }
func (diskMachine) save(*store.ApplyBatch) error { return nil }

// snapshot streams the data of a consistent Pebble view, whose applied
// state it reports, as key/value pairs: (len:uvarint key len:uvarint value)...
func (m diskMachine) snapshot(g *group) (store.AppliedState, func(io.Writer) error, func(), error) {
	r, err := g.st.OpenSnapshot()
	if err != nil {
		return store.AppliedState{}, nil, nil, err
	}
	write := func(w io.Writer) error {
		var werr error
		var hdr []byte
		err := r.Scan(func(k, v []byte) bool {
			hdr = binary.AppendUvarint(hdr[:0], uint64(len(k)))
			if _, werr = w.Write(hdr); werr == nil {
				if _, werr = w.Write(k); werr == nil {
					hdr = binary.AppendUvarint(hdr[:0], uint64(len(v)))
					if _, werr = w.Write(hdr); werr == nil {
						_, werr = w.Write(v)
					}
				}
			}
			return werr == nil
		})
		if werr != nil {
			return werr
		}
		return err
	}
	return r.Applied(), write, func() { _ = r.Close() }, nil
}

func (m diskMachine) install(w *store.SnapshotWriter, data []byte) error {
	for len(data) > 0 {
		k, rest, ok := cutUvarintBytes(data)
		if !ok {
			return fmt.Errorf("%w: bad snapshot key", ErrInvalid)
		}
		v, rest, ok := cutUvarintBytes(rest)
		if !ok {
			return fmt.Errorf("%w: bad snapshot value", ErrInvalid)
		}
		if err := w.Put(k, v); err != nil {
			return err
		}
		data = rest
	}
	return nil
}

// restore tells the state machine, if it caches what it reads, that a
// snapshot replaced its data (the data is in the store already).
func (m diskMachine) restore([]byte) error {
	if r, ok := m.sm.(DiskRestorer); ok {
		r.Restored()
	}
	return nil
}

// cutUvarintBytes splits a length-prefixed byte string off b.
func cutUvarintBytes(b []byte) (s, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}
