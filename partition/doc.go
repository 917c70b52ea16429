// Package partition is the partition log: the state machine a broker's
// partition runs on each of its replicas, and the reference node's.
//
// # The log
//
// A partition is a log of records with dense offsets from 0 that are never
// reused. It lives in the host's Pebble, under the group's key span, as
// record batches keyed by their base offset: one key per Raft entry (the
// host packs the proposals queued for a group into one entry; apply writes
// their records under one key), written once, by apply. Fetch reads from
// any replica up to what that replica applied; the high watermark is one
// past the last applied offset.
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
