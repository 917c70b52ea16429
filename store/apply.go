package store

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ApplyBatch is the apply path's write: a state machine's writes and the
// group's applied state, committed together in one unsynced Pebble batch.
// Committing them together is what keeps an entry from being applied twice
// or skipped after a crash: on restart the applied index is exactly what the
// state machine reflects. The batch is not synced: raft can always reapply
// committed entries from the durable log, and the next synced log batch
// makes it durable anyway.
//
// Keys are the state machine's own; the batch puts them under the group's
// data span. An ApplyBatch is used by one goroutine and committed once.
type ApplyBatch struct {
	g       *GroupStorage
	b       *pebble.Batch
	key     []byte
	applied *AppliedState
	err     error
}

// NewApplyBatch starts an apply batch for the group. On a failed or closed
// store the batch records nothing and Commit returns the store's error.
func (g *GroupStorage) NewApplyBatch() *ApplyBatch {
	if err := g.s.usable(); err != nil {
		return &ApplyBatch{g: g, err: err}
	}
	return &ApplyBatch{g: g, b: g.s.db.NewBatch()}
}

func (a *ApplyBatch) dataKey(userKey []byte) []byte {
	a.key = appendDataKey(a.key[:0], a.g.id, userKey)
	return a.key
}

// write runs op on the batch unless an earlier step failed.
func (a *ApplyBatch) write(op func(b *pebble.Batch) error) {
	if a.err == nil {
		if err := op(a.b); err != nil {
			a.err = fmt.Errorf("%w: apply batch: %w", ErrInvalid, err)
		}
	}
}

// Set writes a state machine key.
func (a *ApplyBatch) Set(key, value []byte) {
	a.write(func(b *pebble.Batch) error { return b.Set(a.dataKey(key), value, nil) })
}

// Delete deletes a state machine key.
func (a *ApplyBatch) Delete(key []byte) {
	a.write(func(b *pebble.Batch) error { return b.Delete(a.dataKey(key), nil) })
}

// DeleteRange deletes the state machine keys in [start, end).
func (a *ApplyBatch) DeleteRange(start, end []byte) {
	a.write(func(b *pebble.Batch) error {
		return b.DeleteRange(appendDataKey(nil, a.g.id, start), a.dataKey(end), nil)
	})
}

// SetStateSnapshot replaces the durable snapshot of an in-memory state
// machine (stored in chunks inside the replica span).
func (a *ApplyBatch) SetStateSnapshot(data []byte) {
	a.write(func(b *pebble.Batch) error {
		start, end := stateSnapshotSpan(a.g.id)
		if err := b.DeleteRange(start, end, nil); err != nil {
			return err
		}
		return putStateSnapshot(a.g.id, data, func(k, v []byte) error { return b.Set(k, v, nil) })
	})
}

// SetApplied records the applied state the batch brings the group to.
func (a *ApplyBatch) SetApplied(st AppliedState) { a.applied = &st }

// Commit writes the batch without syncing it and, on success, publishes the
// applied state. A failed write fails the store.
func (a *ApplyBatch) Commit() (err error) {
	defer a.Close()
	if a.err != nil {
		return a.err
	}
	if err := a.g.s.usable(); err != nil {
		return err
	}
	if a.g.isRemoving() {
		return fmt.Errorf("%w: group %d", ErrGroupRemoved, a.g.id)
	}
	if a.applied != nil {
		v, err := a.applied.encode()
		if err != nil {
			return fmt.Errorf("%w: applied state: %w", ErrInvalid, err)
		}
		if err := a.b.Set(appliedKey(a.g.id), v, nil); err != nil {
			return err
		}
	}
	defer a.g.s.recoverFatal(&err)
	if err := a.g.s.db.Apply(a.b, pebble.NoSync); err != nil {
		a.g.s.fail(fmt.Errorf("apply batch: %w", err))
		return a.g.s.Err()
	}
	a.g.s.m.ApplyBatches.Inc()
	a.g.s.m.ApplyBytes.Add(float64(a.b.Len()))
	if a.applied != nil {
		a.g.mu.Lock()
		a.g.mu.applied = *a.applied
		a.g.mu.Unlock()
	}
	return nil
}

// Close releases the batch; Commit closes it too.
func (a *ApplyBatch) Close() {
	if a.b != nil {
		_ = a.b.Close()
		a.b = nil
	}
}

// stateSnapshotChunk is the size of one key of a stored state snapshot.
const stateSnapshotChunk = 1 << 20

func putStateSnapshot(groupID uint64, data []byte, put func(k, v []byte) error) error {
	for chunk := uint32(0); ; chunk++ {
		n := min(len(data), stateSnapshotChunk)
		if err := put(stateSnapshotKey(groupID, chunk), data[:n]); err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}

// Get reads a state machine key of the group. The value is a copy; found
// is false if the key does not exist.
func (g *GroupStorage) Get(key []byte) (value []byte, found bool, err error) {
	defer g.s.recoverFatal(&err)
	return g.s.get(appendDataKey(nil, g.id, key))
}

// Scan calls fn for each state machine key in [start, end) in order (nil
// end: to the end of the group's data) until fn returns false. key and
// value are valid only during the call.
func (g *GroupStorage) Scan(start, end []byte, fn func(key, value []byte) bool) (err error) {
	defer g.s.recoverFatal(&err)
	if g.s.closed.Load() {
		return ErrClosed
	}
	lower, upper := g.dataBounds(start, end)
	return scanData(g.s.db, lower, upper, fn)
}

// dataBounds returns the Pebble bounds of state machine keys [start, end)
// (nil end: to the end of the group's data).
func (g *GroupStorage) dataBounds(start, end []byte) (lower, upper []byte) {
	lower = appendDataKey(nil, g.id, start)
	if end == nil {
		_, upper = dataSpan(g.id)
		return lower, upper
	}
	return lower, appendDataKey(nil, g.id, end)
}

// ScanReverse is Scan from the last key of [start, end) down to the
// first: how a state machine finds the greatest key at or below a bound.
func (g *GroupStorage) ScanReverse(start, end []byte, fn func(key, value []byte) bool) (err error) {
	defer g.s.recoverFatal(&err)
	if g.s.closed.Load() {
		return ErrClosed
	}
	lower, upper := g.dataBounds(start, end)
	it, err := g.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.Last(); valid; valid = it.Prev() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if !fn(it.Key()[dataPrefixLen:], v) {
			break
		}
	}
	return it.Error()
}

// LoadStateSnapshot returns the durable snapshot of an in-memory state
// machine, or nil if there is none.
func (g *GroupStorage) LoadStateSnapshot() (data []byte, err error) {
	defer g.s.recoverFatal(&err)
	if g.s.closed.Load() {
		return nil, ErrClosed
	}
	if data, err = readStateSnapshot(g.s.db, g.id); err != nil {
		return nil, g.s.readFailed(err)
	}
	return data, nil
}

// reader is what Pebble's DB and Snapshot have in common for scans.
type reader interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

func readStateSnapshot(r reader, groupID uint64) (data []byte, err error) {
	start, end := stateSnapshotSpan(groupID)
	err = scanRaw(r, start, end, func(_, v []byte) bool {
		data = append(data, v...)
		return true
	})
	return data, err
}

// scanData scans state machine keys, handing fn the user keys.
func scanData(r reader, lower, upper []byte, fn func(key, value []byte) bool) error {
	return scanRaw(r, lower, upper, func(k, v []byte) bool { return fn(k[dataPrefixLen:], v) })
}

func scanRaw(r reader, lower, upper []byte, fn func(key, value []byte) bool) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if !fn(it.Key(), v) {
			break
		}
	}
	return it.Error()
}
