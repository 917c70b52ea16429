// Package node is the reference node behind `flotilla node` and
// `flotilla demo`: a multiraft host whose groups are partition logs, the
// client API (proto/clientpb) on a gRPC server of its own, and Prometheus
// metrics over HTTP.
//
// Peers and clients have a server and an address each (clientserver.go):
// a client's limits are not a peer's, and a flood of clients must not
// reach the peers' links. A not-leader answer points a client to the
// leader's client address (Config.ClientAddrs). With mutual TLS on,
// clients need a certificate from the cluster's CA naming their roles
// (auth.go); what a client may spend is bounded by Budget (budget.go).
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
