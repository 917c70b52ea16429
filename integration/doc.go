// Package integration simulates multi-node Flotilla clusters inside one
// test process: real hosts, real Pebble (on a crashable in-memory FS or on
// disk), real or filtered transport, injected faults, and checkers for the
// invariants of DESIGN.md.
//
// Cluster (cluster.go) is the harness: N hosts, each on its own crashable
// in-memory filesystem, wired by transport.Network, driven by one manual
// clock. WaitFor advances time one tick at a time until a condition holds,
// so no test depends on wall-clock ticks of a loaded machine. LogSM is a
// state machine that records what it applied, to compare replicas.
package integration
