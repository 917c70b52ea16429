// Command flotilla is the reference node: it will run a host with a client
// API, Prometheus metrics, a one-command demo and the benchmarks.
//
// Today it offers one thing that runs: `flotilla storebench`, which drives
// the store's log writer with many groups on a real disk and prints what one
// fsync carries. The node itself arrives with the host and transport.
package main
