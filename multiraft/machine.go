package multiraft

import (
	"bufio"
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
	// snapshotter is the in-memory kind's Snapshotter, nil if it has none
	// (or is on disk).
	snapshotter() Snapshotter
	// plain is the in-memory kind's StateMachine, nil for the on-disk.
	plain() StateMachine
	// snapshot returns the applied state, what measures the size of the
	// state's data (off the worker: it may read it all) and a writer of
	// it for a follower, and a release to call once the send is over.
	snapshot(g *group) (store.AppliedState, func() (int64, error), func(io.Writer) error, func(), error)
	// receive copies a state's data, as snapshot wrote it, from r into a
	// staged snapshot as it arrives. Only io.EOF itself ends the data (a
	// stream cut short is an error, whatever it wraps); avail bounds the
	// bytes still to come, so no length prefix allocates past them.
	receive(r *bufio.Reader, avail func() uint64, st *store.StagedSnapshot) error
	// restore loads the state from data, or (data nil) from what a
	// snapshot install put in the store.
	restore(g *group, data []byte) error
	// retainFrom is the first log entry the state machine reads back
	// (LogRetainer); 0: none.
	retainFrom() uint64
}

func (h *Host) newMachine(g *group) machine {
	if h.cfg.DiskStateMachine != nil {
		return diskMachine{sm: h.cfg.DiskStateMachine(GroupID(g.id), g.reader())}
	}
	return memMachine{sm: h.cfg.StateMachine(GroupID(g.id))}
}

type memMachine struct{ sm StateMachine }

func (m memMachine) apply(_ *store.ApplyBatch, cmds []Command) ([][]byte, error) {
	return m.sm.Apply(cmds)
}

func (memMachine) persistsApplied() bool { return false }
func (memMachine) retainFrom() uint64    { return 0 }

func (m memMachine) snapshotter() Snapshotter {
	s, _ := m.sm.(Snapshotter)
	return s
}

func (m memMachine) plain() StateMachine { return m.sm }

// snapshot serializes the state in memory: the in-memory kind is for
// state that fits there (a receiver also loads it whole to restore it).
// A Snapshotter's state is captured here and written on the sending
// goroutine, once.
func (m memMachine) snapshot(g *group) (store.AppliedState, func() (int64, error), func(io.Writer) error, func(), error) {
	if s := m.snapshotter(); s != nil {
		write, err := s.PrepareSnapshot(g.meta())
		if err != nil {
			return store.AppliedState{}, nil, nil, nil, err
		}
		wo := &writeOnce{write: write}
		measure := func() (int64, error) {
			data, err := wo.bytes()
			return int64(len(data)), err
		}
		writeData := func(w io.Writer) error {
			data, err := wo.bytes()
			if err != nil {
				return err
			}
			_, err = w.Write(data)
			return err
		}
		return g.appliedState(), measure, writeData, func() {}, nil
	}
	var buf bytes.Buffer
	if err := m.sm.Snapshot(&buf); err != nil {
		return store.AppliedState{}, nil, nil, nil, err
	}
	write := func(w io.Writer) error { _, err := w.Write(buf.Bytes()); return err }
	return g.appliedState(), func() (int64, error) { return int64(buf.Len()), nil }, write, func() {}, nil
}

func (m memMachine) receive(r *bufio.Reader, _ func() uint64, st *store.StagedSnapshot) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := st.WriteState(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (m memMachine) restore(g *group, data []byte) error {
	if data == nil {
		var err error
		if data, err = g.st.LoadStateSnapshot(); err != nil {
			return err
		}
	}
	return m.sm.Restore(bytes.NewReader(data))
}

type diskMachine struct{ sm DiskStateMachine }

func (m diskMachine) apply(b *store.ApplyBatch, cmds []Command) ([][]byte, error) {
	return m.sm.Apply(b, cmds)
}

func (diskMachine) snapshotter() Snapshotter { return nil }
func (diskMachine) plain() StateMachine      { return nil }

func (diskMachine) persistsApplied() bool { return true }

func (m diskMachine) retainFrom() uint64 {
	if r, ok := m.sm.(LogRetainer); ok {
		return r.RetainFrom()
	}
	return 0
}

// snapshot streams a consistent Pebble view, whose applied state it
// reports: the log entries the state machine keeps (LogRetainer), then its
// data, as tagged records:
//
//	'e' index:uvarint len:uvarint stored-entry
//	'k' len:uvarint key len:uvarint value
//
// A first pass over the view counts the bytes, so that the receiver hears
// the size before any data moves; neither pass holds more than a record
// in memory.
func (m diskMachine) snapshot(g *group) (store.AppliedState, func() (int64, error), func(io.Writer) error, func(), error) {
	keep := m.retainFrom()
	r, err := g.st.OpenSnapshot()
	if err != nil {
		return store.AppliedState{}, nil, nil, nil, err
	}
	measure := func() (int64, error) {
		var size int64
		err := r.ScanLog(keep, func(index uint64, v []byte) bool {
			size += int64(1 + uvarintLen(index) + uvarintLen(uint64(len(v))) + len(v))
			return true
		})
		if err == nil {
			err = r.Scan(func(k, v []byte) bool {
				size += int64(1 + uvarintLen(uint64(len(k))) + len(k) + uvarintLen(uint64(len(v))) + len(v))
				return true
			})
		}
		return size, err
	}
	write := func(w io.Writer) error {
		var werr error
		var hdr []byte
		put := func(tag byte, a uint64, b, v []byte) bool {
			hdr = append(hdr[:0], tag)
			hdr = binary.AppendUvarint(hdr, a)
			if _, werr = w.Write(hdr); werr == nil && b != nil {
				if _, werr = w.Write(b); werr == nil {
					hdr = binary.AppendUvarint(hdr[:0], uint64(len(v)))
					_, werr = w.Write(hdr)
				}
			}
			if werr == nil {
				_, werr = w.Write(v)
			}
			return werr == nil
		}
		err := r.ScanLog(keep, func(index uint64, v []byte) bool {
			hdr = append(hdr[:0], 'e')
			hdr = binary.AppendUvarint(hdr, index)
			hdr = binary.AppendUvarint(hdr, uint64(len(v)))
			if _, werr = w.Write(hdr); werr == nil {
				_, werr = w.Write(v)
			}
			return werr == nil
		})
		if err == nil && werr == nil {
			err = r.Scan(func(k, v []byte) bool { return put('k', uint64(len(k)), k, v) })
		}
		if werr != nil {
			return werr
		}
		return err
	}
	return r.Applied(), measure, write, func() { _ = r.Close() }, nil
}

// maxSnapshotField bounds one key or value in a snapshot (and so in an
// on-disk state machine that must add replicas): a receiver holds one
// whole to write it.
const maxSnapshotField = 256 << 20

// receive decodes the records as they arrive into the staged table,
// keeping one record in memory.
func (m diskMachine) receive(r *bufio.Reader, avail func() uint64, st *store.StagedSnapshot) error {
	var key, value []byte
	for {
		tag, err := r.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch tag {
		case 'e':
			index, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("%w: snapshot log entry index: %w", ErrInvalid, err)
			}
			if value, err = readLenBytes(r, value, avail); err != nil {
				return fmt.Errorf("%w: snapshot log entry %d: %w", ErrInvalid, index, err)
			}
			if err := st.PutLogEntry(index, value); err != nil {
				return err
			}
		case 'k':
			if key, err = readLenBytes(r, key, avail); err != nil {
				return fmt.Errorf("%w: snapshot key: %w", ErrInvalid, err)
			}
			if value, err = readLenBytes(r, value, avail); err != nil {
				return fmt.Errorf("%w: snapshot value: %w", ErrInvalid, err)
			}
			if err := st.Put(key, value); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: snapshot record tag %#x", ErrInvalid, tag)
		}
	}
}

// readLenBytes reads a length-prefixed byte string into buf's storage:
// at most maxSnapshotField bytes, and no more than avail says are still
// to come.
func readLenBytes(r *bufio.Reader, buf []byte, avail func() uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	if limit := min(maxSnapshotField, avail()); n > limit {
		return nil, fmt.Errorf("%d bytes, at most %d taken (%d still to come)", n, uint64(maxSnapshotField), avail())
	}
	return readN(r, buf, n)
}

// readN reads n bytes into buf's storage, growing it as needed.
func readN(r io.Reader, buf []byte, n uint64) ([]byte, error) {
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return buf, err
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// restore tells the state machine, if it caches what it reads, that a
// snapshot replaced its data (the data is in the store already).
func (m diskMachine) restore(*group, []byte) error {
	if r, ok := m.sm.(DiskRestorer); ok {
		r.Restored()
	}
	return nil
}
