// Package integration simulates multi-node Flotilla clusters inside one
// test process, on the embedders' test kit (package flotillatest): real
// hosts, real Pebble (on a crashable in-memory FS or on disk), real or
// filtered transport, injected faults, and checkers for the invariants of
// DESIGN.md. `go test ./integration -transport=grpc` runs the whole suite
// over real gRPC.
package integration
