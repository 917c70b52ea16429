package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/internal/bench"
)

func benchCmd() *cobra.Command {
	var (
		cfg                     bench.Config
		jsonFile, cpuProf, heap string
		nRuns                   int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run BENCH.md's workloads on a 3-node cluster in this process (real disk, fsync on, gRPC on 127.0.0.1)",
		Long: `Runs one workload of BENCH.md, or all of them (--workload all): write-48,
write-48-128, write-1k, latency-48, idle-10k, idle-100k, restart-10k,
failover-1k, failover-idle-10k, and with --procs catchup-1g (a replica
added on a fourth, fresh node process to a 1 GiB partition: time to
caught up, bytes/s, the receiver's peak RSS growth). Each starts three nodes, in this process (proposers call the
hosts directly) or with --procs as three node processes (proposers call
the client API over gRPC; CPU and RSS are then the nodes' own), each with
its own Pebble under one temporary root (removed at the end, also on Ctrl-C),
creates the groups, spreads their leaders, warms up, and measures: committed
proposals/s, latency p50/p99/p99.9 (client side), fsyncs/s per host,
proposals per fsync, peer frames/s and messages per frame, heartbeat
messages/s, records on the wire per second, CPU seconds per second, peak
RSS, leader changes and errors (busy answers among them). Latency runs
from a proposal's first attempt. The
flags override the workload's shape.`,
		Example: `  flotilla bench --workload write-48
  flotilla bench --workload all --duration 10s --json results.json
  flotilla bench --workload write-48 --runs 3
  flotilla bench --workload catchup-1g --procs --runs 3`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			names := []string{cfg.Workload}
			if cfg.Workload == "all" {
				names = nil
				for _, n := range bench.Names {
					if n != "catchup-1g" || cfg.Procs { // it measures a node process
						names = append(names, n)
					}
				}
			}
			cfg.Progress = cmd.ErrOrStderr()
			if cpuProf != "" {
				f, err := os.Create(cpuProf)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if heap != "" {
				runtime.SetMutexProfileFraction(100)
				runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
				defer writeProfiles(heap)
			}
			var reports []*bench.Report
			var table strings.Builder // printed again as each run ends
			bench.TableHeader(&table)
			for _, name := range names {
				c := cfg
				c.Workload = name
				var runs []*bench.Report
				for i := range max(nRuns, 1) {
					if nRuns > 1 {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: run %d of %d\n", name, i+1, nRuns)
					}
					if cfg.NodeProfile != "" && (len(names) > 1 || nRuns > 1) {
						c.NodeProfile = fmt.Sprintf("%s.%s.%d", cfg.NodeProfile, name, i+1) // one file per run
					}
					r, err := bench.Run(ctx, c)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					runs = append(runs, r)
				}
				r := runs[0]
				if len(runs) > 1 {
					r = bench.Median(runs)
				}
				reports = append(reports, r)
				bench.TableRow(&table, r)
				fmt.Fprint(cmd.OutOrStdout(), "\n"+table.String())
			}
			if cfg.Quick {
				fmt.Fprintln(cmd.OutOrStdout(), "* scaled down (--quick): a tenth of the idle and restart groups and entries, at most 2,000 proposers, short windows")
			}
			if jsonFile != "" {
				b, err := json.MarshalIndent(reports, "", "  ")
				if err != nil {
					return err
				}
				return os.WriteFile(jsonFile, append(b, '\n'), 0o644)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Workload, "workload", "write-48", "workload name, or all")
	f.DurationVar(&cfg.Duration, "duration", 0, "measured window (default 60s; 5s with --quick)")
	f.DurationVar(&cfg.Warmup, "warmup", 0, "warm-up before the window (default 10s; 2s with --quick)")
	f.BoolVar(&cfg.Procs, "procs", false, "run the three nodes as processes of this binary, driven through the client API (default: in this process, hosts called directly)")
	f.StringVar(&cfg.SM, "sm", "partition", "the groups' state machine: partition (the partition log) or noop (does nothing: the like-for-like figure against libraries benchmarked so; in process only)")
	f.BoolVar(&cfg.Quick, "quick", false, "scale the workload down (what make bench-workloads runs)")
	f.IntVar(&cfg.Groups, "groups", 0, "groups (0: the workload's)")
	f.IntVar(&cfg.Payload, "payload", 0, "bytes per proposal (0: the workload's)")
	f.IntVar(&cfg.Proposers, "proposers", 0, "closed-loop proposers (0: the workload's)")
	f.IntVar(&cfg.Entries, "entries", 0, "entries per group before restart-10k's restart (0: the workload's)")
	f.IntVar(&nRuns, "runs", 1, "run each workload this many times and report the median of every figure")
	f.StringVar(&cfg.Dir, "dir", "", "where the temporary data root goes (default: the system's temporary directory)")
	f.StringVar(&jsonFile, "json", "", "also write every figure to this JSON file")
	f.StringVar(&cpuProf, "cpuprofile", "", "write a CPU profile of the run to this file")
	f.StringVar(&cfg.NodeProfile, "node-cpuprofile", "", "with --procs: write node 1's CPU profile of the measured window to this file (FILE.WORKLOAD.RUN for several runs)")
	f.StringVar(&heap, "profiles", "", "write allocation, mutex and block profiles to PREFIX.{allocs,mutex,block}")
	return cmd
}

// writeProfiles writes the allocation, mutex and block profiles.
func writeProfiles(prefix string) {
	for _, name := range []string{"allocs", "mutex", "block"} {
		f, err := os.Create(prefix + "." + name)
		if err != nil {
			continue
		}
		_ = pprof.Lookup(name).WriteTo(f, 0)
		_ = f.Close()
	}
}
