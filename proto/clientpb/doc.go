// Package clientpb is the generated code of the reference node's client
// API (client.proto): partitions, produce, fetch, leadership and replicas.
// Regenerate it with `make proto`.
package clientpb
