// Package node is the reference node behind `flotilla node` and
// `flotilla demo`: a multiraft host whose groups are partition logs, the
// client API (proto/clientpb) on the peer gRPC port, and Prometheus
// metrics over HTTP.
//
// One gRPC server per node serves both the peer protocol and the client
// API, so a node has one address: the one its peers know it by, which is
// also the address a not-leader answer points clients to. With mutual TLS
// on, clients need a certificate from the cluster's CA too.
//
// The client API's size limits are all in Limits (limits.go): Produce
// checks a request once against them, the host's MaxProposalBytes is
// derived from them, and Fetch bounds its encoded response by them.
//
// Partition IDs are group IDs. Creating a partition asks each listed node,
// through the peer admin call, to create its replica; deleting one asks
// every node to remove its replica, which leaves a tombstone so the ID is
// never used again on that node.
package node
