// Package bench runs the standard workloads of BENCH.md (behind
// `flotilla bench`): three reference nodes, each with its own Pebble on
// real disk (fsync on), over real gRPC on 127.0.0.1, under closed-loop
// proposers.
//
// The nodes run in this process by default (localCluster: the proposers
// call the hosts directly, and CPU and RSS are the whole process's), or
// as three `flotilla node` processes with --procs (procCluster: the
// proposers call the client API, and CPU and RSS are the node processes'
// own, read from /proc). Both sit behind the cluster interface, so every
// workload runs either way.
//
// Figures come from the hosts' own metrics (fsyncs, frames, heartbeats,
// records on the wire, leader changes: a group's new leader serving,
// counted once, never a campaign or pre-vote) plus a client-side latency
// histogram (from a proposal's first attempt, its busy and not-leader
// retries included), CPU time and peak RSS. Several runs of a workload combine into medians (Median).
package bench
