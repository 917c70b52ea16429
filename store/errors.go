package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers compare with errors.Is; the store wraps them with
// context. raft.Storage methods are the exception: they return etcd raft's
// own sentinels unwrapped, because raft compares them with ==.
var (
	// ErrFailed is returned by every call after a write, sync or read
	// failed, or the disk stalled. The store is fail-stop: it never retries
	// a failed write and never runs a completion for a batch that was not
	// synced. The cause is wrapped alongside.
	ErrFailed = errors.New("store: failed")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store: closed")
	// ErrBusy is returned when the log writer's queue is over its bound in
	// items or bytes (for example while Pebble stalls writes). The caller
	// retries later; nothing was queued.
	ErrBusy = errors.New("store: log writer busy")
	// ErrGroupNotFound is returned for a group this store does not host.
	ErrGroupNotFound = errors.New("store: group not found")
	// ErrGroupExists is returned when creating a group that already exists.
	ErrGroupExists = errors.New("store: group already exists")
	// ErrGroupRemoved is returned for work on a group being removed.
	ErrGroupRemoved = errors.New("store: group removed")
	// ErrReplicaTooOld is returned when creating a replica whose ID is below
	// the group's tombstone: replica IDs are never reused.
	ErrReplicaTooOld = errors.New("store: replica ID below tombstone")
	// ErrInvalid is returned for arguments that break the log's rules
	// (non-contiguous entries, a truncation past the last index, ...).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrCorrupt is returned when stored data cannot be decoded.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrLocked is returned by Open when another store holds the data
	// directory: another process, or another host of this one.
	ErrLocked = errors.New("store: data directory in use")
	// ErrIdentity is returned by Open when the data directory belongs to
	// another node or another cluster than the one asked for.
	ErrIdentity = errors.New("store: data directory of another node")
)

func errMissing(groupID, index uint64) error {
	return fmt.Errorf("%w: group %d: log entry %d is missing", ErrCorrupt, groupID, index)
}
