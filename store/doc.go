// Package store is the storage layer of a Flotilla host: one Pebble
// instance holding every Raft group the host runs, with one synced write
// path shared by all of them.
//
// # What it owns
//
// Key layout (keys.go): every key of a group sits under a big-endian
// group-ID prefix, in two spans. The replica span holds the raft log, hard
// state, truncation point, applied state, an in-memory state machine's
// durable snapshot and an on-disk state machine's data; a snapshot install
// replaces it and a removal deletes it, as a whole. The identity span (the
// replica ID hosted here, and the tombstone naming the next replica ID
// allowed) survives both, so replica IDs are never reused.
//
// Per-group raft.Storage (group.go): GroupStorage serves InitialState,
// Entries, Term, FirstIndex, LastIndex and Snapshot with etcd raft's exact
// contracts, from a shared entry cache (entry_cache.go, one global byte
// budget) and then Pebble. Errors raft must understand are its own
// sentinels, unwrapped. Reads are safe concurrently with appends,
// truncation and snapshot install: whatever may disappear under a reader is
// unpublished first (the new first index before a truncation's deletes, the
// shortened last index before a tail overwrite), and a reader that sees the
// group's generation change while it read simply reads again.
//
// Two write paths. (a) The log writer (log_writer.go), synced: appends with
// hard states, truncations, group creations and removals from any number of
// groups go into ONE Pebble batch committed with ONE WAL sync; only after
// the sync does each item's completion run, in queue order, which keeps
// every group's append work FIFO. (b) Apply batches (apply.go), unsynced: a
// state machine's writes plus the group's applied state (index, term,
// ConfState), committed together.
//
// Snapshots (snapshot.go): Snapshot() returns metadata only; the data is
// read from a consistent Pebble snapshot (OpenSnapshot) and streamed by the
// caller. InstallSnapshot writes the received state as one SSTable and
// ingests it with IngestAndExcise over the group's replica span, off the
// shared writer.
//
// # Goroutines
//
// Two, both owned by the log writer and stopped by Close: the batcher
// builds and applies batches, the syncer waits for each batch's sync and
// runs completions. Everything else runs on the caller's goroutine. Pebble
// runs its own background goroutines (flushes, compactions, the disk health
// checker).
//
// # Failure
//
// The store is fail-stop. A failed write, sync or read, Pebble's Fatalf, or
// a disk that stalls past Config.DiskStallThreshold puts it in a failed
// state: every later call returns ErrFailed wrapping the cause, no
// completion runs for a batch that was not synced, and Config.OnFailure
// tells the host, which stops. Acknowledgements are never derived from
// reads: Pebble shows writes before they are synced.
//
// # Recovery
//
// Open rebuilds each group's hard state, log bounds, truncation point,
// applied state and ConfState from what the last completed writes left,
// and raises the commit index to the applied index where apply got ahead of
// the recorded commit.
package store
