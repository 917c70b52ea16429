// Package peerpb is the generated code of the peer protocol
// (peer.proto): the Raft frame stream with coalesced heartbeats, snapshot
// chunks, admin calls and the handshake. Regenerate it with `make proto`;
// `make proto-check` (part of `make test`) fails if it is stale.
package peerpb
