// Package transport carries Raft messages between hosts: one long-lived
// batched gRPC stream per peer node, coalesced heartbeats, snapshot
// streams, backpressure and mutual TLS.
//
// Not built yet. It must not import multiraft or store.
package transport
