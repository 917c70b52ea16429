// Package partition is the partition log: the state machine a broker's
// partition runs on each of its replicas, and the reference node's.
//
// # The log
//
// A partition is a log of records with dense offsets from 0 that are never
// reused. Its records live where Raft already wrote them: in the group's
// Raft log. Apply keeps only what it must: per Raft entry, one batch key
// under the group's span (keyed by the batch's base offset) that says how
// many records the entry's accepted produce requests hold and where they
// are (the entry's index and the requests' slots), plus the producer state
// and the log head. Fetch reads the batch keys and then the entries they
// name, through the host's multiraft.LogReader, from any replica up to
// what that replica applied; the high watermark is one past the last
// applied offset. The host keeps the Raft log from the log's RetainFrom on
// (multiraft.LogRetainer): the Raft log is as long as the partition's
// retention, and a snapshot of the partition is its retained entries plus
// the small state (see Retention). A host without a LogReader (or a build
// before this one) gets a log that copies its records into the batch
// value; such copies read on after an upgrade.
//
// # Where the records live: the decision
//
// Before, every record was written twice: in the Raft log, and again by
// apply as the batch value; the Raft log was truncated once applied. The
// alternative, the one a broker chooses (Redpanda's), is the Raft log as
// the partition log, which is what this package now does. Measured on the
// project's 2-vCPU VM (flotilla bench, write-48-128: 48 partitions, 128-byte
// records, 10,000 proposers, 3 in-process nodes; 30 s windows, medians of
// 3 alternating runs, same window):
//
//	                              two copies   Raft log     change
//	prototype (a0 below):
//	  proposals/s                 33,444       39,531       +18%
//	  CPU per proposal            55.2 us      44.0 us      -20%
//	  WAL bytes per proposal      951          538          -43%
//	  flushed + compacted / prop  684          535          -22%
//	this package:
//	  proposals/s                 31,978       38,063       +19%
//	  CPU per proposal            56.5 us      49.7 us      -12%
//	  WAL bytes per proposal      809          545          -33%
//	  flushed + compacted / prop  597          595           0%
//	  p99                         852 ms       541 ms
//	fetch, 1 MiB of 128 B records (BenchmarkFetch, warm):
//	  MiB/s, median of 6          1,163        904          -22%  (p=0.015)
//
// (a0: apply wrote an index instead of the copy and the log was never
// truncated, before fetch read the log; this package: commit 54c92eb
// against 44a0316; bytes are over all three hosts; the fetch figures are
// benchstat's over 6 runs of each at 7059fe5.) What it costs: a fetch
// decodes the Raft entries (the host's proposal packing and the produce
// encoding) instead of a batch of records, about a quarter slower on a
// warm cache (about 900 MiB/s on one core); the Raft log of a
// partition is as long as its retention, so Pebble flushes and compacts
// the records once (before, the copy was flushed and compacted, and the
// log entries mostly died in the memtable); a follower further behind than
// the leader's log gets a snapshot that carries the retained entries (see
// multiraft's snapshot.go); and the store may hold entries below a group's
// truncation, so its format is version 2 (version 1 opens and is marked 2:
// nothing to rewrite). It supersedes DESIGN.md's "Logs are truncated once
// applied and acknowledged by a quorum" (for a partition, once past its
// retention), and "stored as record batches keyed by their base offset (one
// key per Raft entry)" (the batch key stays; its value names the entry).
//
// # Retention
//
// A partition keeps records by size and by age, a segment at a time; the
// leader decides when the log start offset moves and replicates it as a
// command, so every replica serves the same offsets (retention.go). A
// fetch below the start is a *RangeError with the start.
//
// # Idempotent producers
//
// A produce request may carry a producer ID and the sequence number of its
// first record (client sessions, as in section 6.3 of the Raft thesis, and
// Kafka's idempotent producer). For each producer the log keeps the last
// batch it took: a retry of that batch (same first sequence and count,
// after a timeout or a leader change) is applied once and answered with
// the original offsets; a batch that does not follow the last one is
// refused as out of order with the sequence expected.
//
// Producer state is replicated (it is written by apply, like the records)
// and so survives snapshots and restarts. It is bounded: the leader stamps
// its clock into each request, the log's time is the greatest stamp it
// has applied, and a producer idle for Config.ProducerTTL of that time is
// forgotten; a new producer beyond Config.MaxProducers is refused. No
// replica ever reads its own clock, so replicas cannot diverge.
//
// # Deviation from DESIGN.md
//
// DESIGN.md lists no package for the partition log; it is its own package
// (not part of cmd/flotilla) because a broker embedding Flotilla wants the
// same state machine.
package partition
