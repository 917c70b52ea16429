package node

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// spaceFS is the real disk with a free space the test sets.
type spaceFS struct {
	vfs.FS
	free *atomic.Uint64
}

func (fs spaceFS) GetDiskUsage(string) (vfs.DiskUsage, error) {
	free := fs.free.Load()
	return vfs.DiskUsage{AvailBytes: free, TotalBytes: 1 << 40, UsedBytes: 1<<40 - free}, nil
}

// TestDiskFullRefusesClients: a node short of disk space answers produce
// and partition creation at once with RESOURCE_EXHAUSTED, reason
// "disk_full", and keeps serving fetches and deletes; once space returns
// it takes writes again.
func TestDiskFullRefusesClients(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	_, c := startOne(t, func(cfg *Config) {
		fast := cfg.Host
		cfg.Host = func(hc *multiraft.Config) {
			fast(hc)
			hc.FS = spaceFS{FS: vfs.Default, free: &free}
			hc.MinFreeDiskBytes = 1 << 30
		}
	})
	ctx := ctxT(t)
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 10)}); err != nil {
		t.Fatal(err)
	}
	free.Store(100 << 20)
	var err error
	await.Until(t, 30*time.Second, "produce to be refused", func() bool {
		_, err = c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: records(1, 10)})
		return err != nil
	})
	wantFull := func(what string, err error) {
		t.Helper()
		d := client.Exhausted(err)
		if status.Code(err) != codes.ResourceExhausted || d.GetReason() != "disk_full" || d.GetRetryAfterMs() != 10000 {
			t.Fatalf("%s on a full disk: %v (detail %v), want RESOURCE_EXHAUSTED disk_full", what, err, d)
		}
	}
	wantFull("produce", err)
	wantFull("partition creation", c.CreatePartition(ctx, 2, []uint64{1}))
	resp, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Linearizable: true})
	if err != nil || len(resp.GetRecords()) == 0 {
		t.Fatalf("fetch on a full disk: %v, %d records", err, len(resp.GetRecords()))
	}
	if err := c.DeletePartition(ctx, 1); err != nil {
		t.Fatalf("delete on a full disk: %v", err)
	}
	free.Store(1 << 40)
	await.Until(t, 30*time.Second, "partition creation to be taken again", func() bool {
		return c.CreatePartition(ctx, 2, []uint64{1}) == nil
	})
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 2, Records: records(1, 10)}); err != nil {
		t.Fatal(err)
	}
}
