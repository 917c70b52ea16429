// Package bench runs the standard workloads of BENCH.md (behind
// `flotilla bench`): three reference nodes in this process, each with its
// own Pebble on real disk (fsync on), over real gRPC on 127.0.0.1, with
// closed-loop proposers calling the hosts directly. Figures come from the
// hosts' own metrics (fsyncs, frames, heartbeats, elections) plus a
// client-side latency histogram, the process's CPU time and peak RSS.
package bench
