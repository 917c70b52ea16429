// Package transport carries Raft messages between the hosts of a cluster.
//
// # The seam
//
// Transport is what a host needs: Send hands a batch of messages of many
// groups to a peer node without ever blocking the caller (a full queue
// drops and reports the drop through Handler.HandleUnreachable, so raft
// learns the peer is unreachable); SendSnapshot streams a snapshot's data
// to a peer and reports the outcome, so the host can call ReportSnapshot
// with success or failure every time. Inbound traffic reaches the host
// through its Handler, which must not block either: it queues and returns.
//
// Messages of one group to one peer are delivered in the order they were
// sent. Nothing here knows what a group is beyond its ID: replica IDs,
// tombstones and unknown groups are the host's business.
//
// # Implementations
//
// Memory (memory.go) connects the hosts of one process through a Network,
// for tests and simulations: one queue and one sender goroutine per peer,
// like the gRPC transport, plus a chain of Filters that drop, delay or
// partition traffic by node, group and message type.
//
// The gRPC implementation (one long-lived stream per peer, coalesced
// heartbeats, mutual TLS) arrives in its own issue behind the same seam.
//
// # Goroutines
//
// Memory runs one sender goroutine per peer it has sent to, and one pair
// of goroutines per snapshot in flight (at most MaxConcurrentSnapshots);
// Close stops them all.
package transport
