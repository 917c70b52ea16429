package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// TestAlterPartitionErrors: AlterPartition on a partition no node hosts
// is NOT_FOUND at once (it used to propose to every node until the
// caller's deadline); a retention_ms too large for a time.Duration is
// refused, not silently changed.
func TestAlterPartitionErrors(t *testing.T) {
	nodes, c := startCluster(t)
	pc := direct(t, nodes[0].ClientAddr())

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
