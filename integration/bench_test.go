package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCluster runs closed-loop proposers against a 3-host in-process
// cluster on real disk (fsync on, in-memory transport): b.N proposals of
// 16 bytes spread over the groups' leaders. It reports proposals per
// second and what each fsync carried across the three hosts.
func BenchmarkCluster(b *testing.B) {
	for _, shape := range []struct{ groups, proposers int }{{48, 480}, {1000, 2000}} {
		b.Run(fmt.Sprintf("groups=%d/proposers=%d", shape.groups, shape.proposers), func(b *testing.B) {
			c := NewCluster(b, ClusterConfig{Nodes: 3, Disk: true})
			ids := c.CreateGroups(shape.groups)
			leaders := make([]NodeID, len(ids))
			for i, g := range ids {
				leaders[i] = c.Leader(g)
			}
			sum := func(name string) float64 {
				var s float64
				for _, n := range c.Nodes() {
					s += c.Metric(n, name)
				}
				return s
			}
			entries0, syncs0 := sum("flotilla_store_log_entries_total"), sum("flotilla_store_log_batches_total")
			payload := make([]byte, 16)
			var next atomic.Int64
			var failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := 0; p < shape.proposers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					i := p % len(ids)
					h := c.Host(leaders[i])
					for next.Add(1) <= int64(b.N) {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						if _, err := h.Propose(ctx, ids[i], payload); err != nil {
							failed.Add(1)
						}
						cancel()
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			syncs := sum("flotilla_store_log_batches_total") - syncs0
			entries := sum("flotilla_store_log_entries_total") - entries0
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "proposals/s")
			if syncs > 0 {
				b.ReportMetric(entries/syncs, "entries/fsync")
				b.ReportMetric(float64(b.N)/(syncs/3), "proposals/fsync")
			}
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d proposals failed", f)
			}
		})
	}
}
