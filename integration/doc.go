// Package integration simulates multi-node Flotilla clusters inside one
// test process: real hosts, real Pebble (on a crashable in-memory FS or on
// disk), real or filtered transport, injected faults, and checkers for the
// invariants of DESIGN.md.
//
// Not built yet: it arrives with the host.
package integration
