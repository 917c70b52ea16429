package store_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/internal/storeload"
	"github.com/flotilla-io/flotilla/metrics"
	"github.com/flotilla-io/flotilla/store"
)

func benchStore(b *testing.B, cacheBytes int64) (*store.Store, store.Config) {
	cfg := store.DefaultConfig(b.TempDir()) // real disk: syncs are real fsyncs
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Metrics = metrics.NewStore()
	cfg.MemTableSize = 32 << 20
	cfg.EntryCacheBytes = cacheBytes
	s, err := store.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s, cfg
}

// BenchmarkLogWriter appends one 128-byte entry at a time from one
// closed-loop appender per group; b.N is the number of appends in all. It
// reports what each fsync carried and how many fsyncs the disk gave.
func BenchmarkLogWriter(b *testing.B) {
	for _, groups := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			s, cfg := benchStore(b, 64<<20)
			lc := storeload.Config{Groups: groups, Payload: 128, Entries: 1, FirstID: 1, MaxTotal: int64(b.N)}
			gs, err := storeload.CreateGroups(s, lc)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(128)
			b.ResetTimer()
			r, err := storeload.Run(context.Background(), s, storeload.WriterBatches(cfg), gs, lc)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(r.EntriesPerSync(), "entries/sync")
			b.ReportMetric(r.SyncsPerSecond(), "syncs/s")
			b.ReportMetric(r.EntriesPerSecond(), "entries/s")
		})
	}
}

// BenchmarkEntries reads 8 entries at a random index of a 10,000-entry log,
// from the entry cache or, with the cache off, from Pebble.
func BenchmarkEntries(b *testing.B) {
	for _, c := range []struct {
		name  string
		bytes int64
	}{{"cached", 64 << 20}, {"uncached", 0}} {
		b.Run(c.name, func(b *testing.B) {
			s, _ := benchStore(b, c.bytes)
			g, err := s.CreateGroup(1, 1, map[uint64]uint64{1: 1})
			if err != nil {
				b.Fatal(err)
			}
			const n = 10000
			payload := make([]byte, 128)
			for lo := uint64(11); lo < 11+n; lo += 1000 {
				es := make([]*pb.Entry, 1000)
				for i := range es {
					es[i] = &pb.Entry{Index: new(lo + uint64(i)), Term: new(uint64(6)), Data: payload}
				}
				done := make(chan struct{})
				if err := g.Append(es, nil, func() { close(done) }); err != nil {
					b.Fatal(err)
				}
				<-done
			}
			rng := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lo := 11 + rng.Uint64N(n-8)
				es, err := g.Entries(lo, lo+8, 1<<20)
				if err != nil || len(es) != 8 {
					b.Fatalf("Entries(%d): %d, %v", lo, len(es), err)
				}
			}
		})
	}
}
