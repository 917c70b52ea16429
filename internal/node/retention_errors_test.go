package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

func directClient(t *testing.T, addr string) clientpb.PartitionsClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return clientpb.NewPartitionsClient(cc)
}

// TestAlterPartitionErrors: AlterPartition on a partition that does
// not exist (or was deleted) should be refused at once (NOT_FOUND); it
// proposes to every node every 50 ms until the caller's deadline and then
// answers UNAVAILABLE "retry" (a caller without a deadline waits for
// ever, with the server proposing all along). A retention_ms too large
// for a time.Duration must be refused or kept, not silently changed.
func TestAlterPartitionErrors(t *testing.T) {
	nodes, c := startCluster(t)
	pc := directClient(t, nodes[0].ClientAddr())

	t.Run("missing partition", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := pc.AlterPartition(ctx, &clientpb.AlterPartitionRequest{PartitionId: 99, Retention: &clientpb.Retention{RetentionMs: 1000}})
		if code := status.Code(err); code != codes.NotFound && code != codes.InvalidArgument && code != codes.FailedPrecondition {
			t.Errorf("alter of a partition that does not exist: %v after %v, want NOT_FOUND at once", err, time.Since(start).Round(time.Millisecond))
		}
	})

	t.Run("huge retention_ms", func(t *testing.T) {
		ctx := ctxT(t)
		const id = 11
		if err := c.CreatePartition(ctx, id, []uint64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		const forever = uint64(100_000_000_000_000_000) // 1e17 ms: "keep for ever"
		_, err := pc.AlterPartition(ctx, &clientpb.AlterPartitionRequest{PartitionId: id, Retention: &clientpb.Retention{RetentionMs: forever}})
		if status.Code(err) == codes.InvalidArgument {
			return // refused: fine
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Describe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.GetRetention().GetRetentionMs(); got != forever {
			t.Errorf("retention_ms %d accepted and applied as %d (%.1f years): time.Duration overflow in retentionOf",
				forever, got, float64(got)/(365.25*24*3600*1000))
		}
	})
}
