package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/bench"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/internal/node"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

func demoCmd() *cobra.Command {
	var (
		partitions, producers, payload int
		duration, workload             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a 3-node cluster in this process, load it, and keep serving it",
		Long: `Starts a 3-node cluster in this process on free 127.0.0.1 ports, in a
temporary directory removed at exit; creates the partitions (3 replicas
each); produces to them with closed-loop producers for --workload,
printing records/s, p99 latency and leaders per node every second; prints
a summary; then keeps serving the client API and /metrics until Ctrl-C or
until --duration (counted from the start) ends.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			return runDemo(ctx, cmd.OutOrStdout(), demoConfig{partitions: partitions, producers: producers, payload: payload, workload: workload})
		},
	}
	f := cmd.Flags()
	f.IntVar(&partitions, "partitions", 1000, "partitions to create, each with a replica on every node")
	f.IntVar(&producers, "producers", 256, "concurrent closed-loop producers")
	f.IntVar(&payload, "payload", 100, "bytes per record")
	f.DurationVar(&workload, "workload", 20*time.Second, "how long to produce before serving quietly")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	return cmd
}

type demoConfig struct {
	partitions, producers, payload int
	workload                       time.Duration
}

func runDemo(ctx context.Context, out io.Writer, cfg demoConfig) (err error) {
	if cfg.partitions <= 0 || cfg.producers <= 0 || cfg.payload < 0 {
		return errors.New("demo: --partitions and --producers must be positive")
	}
	dir, err := os.MkdirTemp("", "flotilla-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	nodes, err := node.LocalCluster(3, dir, func(c *node.Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	if err != nil {
		return err
	}
	defer func() {
		for _, n := range nodes {
			err = errors.Join(err, n.Close())
		}
	}()
	var addrs []string
	for i, n := range nodes {
		addrs = append(addrs, n.ClientAddr())
		fmt.Fprintf(out, "node %d: client API at %s, peers at %s, metrics at http://%s/metrics\n", i+1, n.ClientAddr(), n.Addr(), n.MetricsAddr())
	}
	fmt.Fprintf(out, "data in %s (removed at exit)\n", dir)
	c, err := client.New(addrs, nil)
	if err != nil {
		return err
	}
	defer c.Close()

	start := time.Now()
	if err := createPartitions(ctx, out, c, cfg.partitions); err != nil {
		return err
	}
	if err := waitLeaders(ctx, nodes, cfg.partitions); err != nil {
		return err
	}
	fmt.Fprintf(out, "\r%d partitions created and led after %s\n", cfg.partitions, time.Since(start).Round(time.Millisecond))

	stats := runWorkload(ctx, out, c, nodes, cfg)
	stats.print(out, nodes, cfg)

	fmt.Fprintf(out, "\nserving until Ctrl-C. Try:\n  flotilla fetch --endpoints %s --partition 1 --offset 0 --max 5\n", strings.Join(addrs, ","))
	fmt.Fprintf(out, "  flotilla partition describe --endpoints %s --id 1\n", strings.Join(addrs, ","))
	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
	return nil
}

func createPartitions(ctx context.Context, out io.Writer, c *client.Client, n int) error {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := next.Add(1); id <= int64(n) && ctx.Err() == nil; id = next.Add(1) {
				if err := c.CreatePartition(ctx, uint64(id), []uint64{1, 2, 3}); err != nil {
					errs <- fmt.Errorf("create partition %d: %w", id, err)
					return
				}
				if d := done.Add(1); d%100 == 0 {
					fmt.Fprintf(out, "\rcreating partitions: %d/%d", d, n)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

func leadersPerNode(nodes []*node.Node) []int {
	counts := make([]int, len(nodes))
	for i, n := range nodes {
		for _, id := range n.Host().Groups() {
			if st, err := n.Host().Status(id); err == nil && st.Serving {
				counts[i]++
			}
		}
	}
	return counts
}

func waitLeaders(ctx context.Context, nodes []*node.Node, n int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		total := 0
		for _, c := range leadersPerNode(nodes) {
			total += c
		}
		if total >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// demoStats collects the workload's outcome in fixed-size histograms,
// however long it runs.
type demoStats struct {
	mu      sync.Mutex
	all     bench.Histogram // every acknowledged produce
	window  bench.Histogram // since the last progress line
	errors  map[string]int
	elapsed time.Duration
}

func runWorkload(ctx context.Context, out io.Writer, c *client.Client, nodes []*node.Node, cfg demoConfig) *demoStats {
	s := &demoStats{errors: map[string]int{}}
	wctx, cancel := context.WithTimeout(ctx, cfg.workload)
	defer cancel()
	record := make([]byte, cfg.payload)
	for i := range record {
		record[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for p := range cfg.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for wctx.Err() == nil {
				id := 1 + rng.Uint64N(uint64(cfg.partitions))
				t0 := time.Now()
				_, err := c.Produce(wctx, &clientpb.ProduceRequest{PartitionId: id, Records: [][]byte{record}})
				d := time.Since(t0)
				s.mu.Lock()
				if err == nil {
					s.all.Add(d)
					s.window.Add(d)
				} else if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Canceled {
					s.errors[code.String()]++ // not the workload's end cutting a call short
				}
				s.mu.Unlock()
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for done := false; !done; {
		select {
		case <-wctx.Done():
			done = true
		case now := <-tick.C:
			s.mu.Lock()
			w := s.window
			s.window = bench.Histogram{}
			s.mu.Unlock()
			fmt.Fprintf(out, "\r[%3.0fs] %8.0f records/s  p99 %7.2f ms  leaders per node %v   ",
				now.Sub(start).Seconds(), float64(w.Count())/now.Sub(last).Seconds(), ms(w.Quantile(0.99)), leadersPerNode(nodes))
			last = now
		}
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	fmt.Fprintln(out)
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s *demoStats) print(out io.Writer, nodes []*node.Node, cfg demoConfig) {
	var fsyncs, entries, frames, heartbeats float64
	for _, n := range nodes {
		fsyncs += n.Metric("flotilla_store_log_batches_total")
		entries += n.Metric("flotilla_store_log_entries_total")
		frames += n.Metric("flotilla_transport_frames_sent_total")
		heartbeats += n.Metric("flotilla_transport_heartbeats_coalesced_total")
	}
	secs := s.elapsed.Seconds()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSUMMARY\t")
	fmt.Fprintf(tw, "partitions\t%d (3 replicas each)\n", cfg.partitions)
	fmt.Fprintf(tw, "producers\t%d closed-loop, %d-byte records\n", cfg.producers, cfg.payload)
	fmt.Fprintf(tw, "workload\t%s\n", s.elapsed.Round(time.Millisecond))
	fmt.Fprintf(tw, "records acknowledged\t%d\n", s.all.Count())
	fmt.Fprintf(tw, "records/s\t%.0f\n", float64(s.all.Count())/secs)
	fmt.Fprintf(tw, "latency p50 / p99 / p99.9\t%.2f / %.2f / %.2f ms\n", ms(s.all.Quantile(0.5)),
		ms(s.all.Quantile(0.99)), ms(s.all.Quantile(0.999)))
	fmt.Fprintf(tw, "fsyncs/s (all nodes)\t%.0f\n", fsyncs/secs)
	if fsyncs > 0 {
		fmt.Fprintf(tw, "log entries per fsync\t%.1f\n", entries/fsyncs)
	}
	fmt.Fprintf(tw, "peer frames/s\t%.0f\n", frames/secs)
	fmt.Fprintf(tw, "coalesced heartbeats\t%.0f\n", heartbeats)
	fmt.Fprintf(tw, "leaders per node\t%v\n", leadersPerNode(nodes))
	if len(s.errors) == 0 {
		fmt.Fprintf(tw, "errors\tnone\n")
	}
	for code, n := range s.errors {
		fmt.Fprintf(tw, "errors (%s)\t%d\n", code, n)
	}
	_ = tw.Flush()
}
