package partition_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
)

// readerOnly hides the host Reader's LogReader: a log over it copies its
// records at apply, as it did before the records stayed in the Raft log.
type readerOnly struct{ multiraft.Reader }

// BenchmarkFetch reads 1 MiB fetches (8,192 records of 128 bytes) from
// random offsets of a partition of 102,400 records on disk, its records
// kept in the Raft log (log) or copied at apply (copies).
func BenchmarkFetch(b *testing.B) {
	const perEntry, entries, size = 64, 1600, 128
	for _, mode := range []string{"log", "copies"} {
		b.Run(mode, func(b *testing.B) {
			c := flotillatest.NewCluster(b, flotillatest.Config{Nodes: 1, Disk: true,
				DiskStateMachine: func(_ multiraft.NodeID, _ multiraft.GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
					if mode == "copies" {
						r = readerOnly{r}
					}
					return partition.New(partition.DefaultConfig(), r)
				}})
			c.CreateGroup(1, 1)
			c.WaitLeaders([]multiraft.GroupID{1})
			recs := make([][]byte, perEntry)
			for i := range recs {
				recs[i] = make([]byte, size)
			}
			data := (&partition.Produce{TimestampMs: 1, Records: recs}).Marshal()
			for range entries {
				if err := c.Do("a produce", func(ctx context.Context) error {
					_, err := c.Host(1).Propose(ctx, 1, data)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			l := c.StateMachine(1, 1).(*partition.Log)
			rng := rand.New(rand.NewPCG(1, 2))
			total := uint64(perEntry * entries)
			b.SetBytes(8192 * size)
			b.ResetTimer()
			for range b.N {
				got, _, err := l.Fetch(rng.Uint64N(total-8192), 8192, 1<<20)
				if err != nil || len(got) != 8192 {
					b.Fatalf("fetch: %d records, %v", len(got), err)
				}
			}
		})
	}
}
