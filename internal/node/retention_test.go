package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// stop closes a node and returns what starts it again on its addresses
// and data.
func stop(t *testing.T, n *Node) (start func() *Node) {
	t.Helper()
	cfg := n.cfg
	cfg.ListenAddr, cfg.ClientListenAddr, cfg.MetricsAddr = n.Addr(), n.ClientAddr(), ""
	cfg.Listener, cfg.ClientListener = nil, nil
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	return func() *Node { return startAgain(t, cfg) }
}

func startAgain(t *testing.T, cfg Config) *Node {
	t.Helper()
	var nn *Node
	await.Until(t, 10*time.Second, "the node restarted on its addresses", func() bool {
		var err error
		nn, err = Start(cfg)
		return err == nil
	})
	return nn
}

// TestRetention: a partition created with retention by size trims, at the
// leader's sweep, the same offsets on every replica: one that restarts and
// one that joins by snapshot too; a fetch below the start is OUT_OF_RANGE
// with the start in its detail; retention by age, set later by
// AlterPartition, empties the log everywhere.
func TestRetention(t *testing.T) {
	nodes, err := LocalCluster(4, t.TempDir(), func(cfg *Config) {
		fastTicks(cfg)
		cfg.RetentionCheckInterval = -1 // sweeps run when the test says
		host := cfg.Host
		cfg.Host = func(hc *multiraft.Config) {
			host(hc)
			hc.SnapshotEntries, hc.LogTailEntries = 20, 5 // a joiner gets a snapshot
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				_ = n.Close()
			}
		}
	})
	c, err := client.New([]string{nodes[0].ClientAddr(), nodes[1].ClientAddr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	const id = 5
	r := &clientpb.Retention{RetentionBytes: 2000, SegmentBytes: 500}
	if err := c.CreatePartitionRetained(ctx, id, []uint64{1, 2, 3}, r); err != nil {
		t.Fatal(err)
	}
	produce := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: id, Records: [][]byte{fmt.Appendf(nil, "%050d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sweep := func() {
		for _, n := range nodes {
			if n != nil {
				n.SweepRetention(ctx)
			}
		}
	}
	// bounds waits until the replicas on nodes agree and returns theirs.
	bounds := func(what string, on ...int) partition.Bounds {
		t.Helper()
		var b partition.Bounds
		await.Until(t, 20*time.Second, what, func() bool {
			var all []partition.Bounds
			for _, i := range on {
				l := nodes[i-1].partitionLog(id)
				if l == nil {
					return false
				}
				got, err := l.Bounds()
				if err != nil {
					return false
				}
				all = append(all, got)
			}
			for _, x := range all[1:] {
				if x != all[0] {
					return false
				}
			}
			b = all[0]
			return true
		})
		return b
	}

	produce(100) // 5,000 bytes in segments of 10 records
	b := bounds("every replica applied the records", 1, 2, 3)
	if b.Start != 0 || b.HighWatermark != 100 || b.Bytes != 5000 || b.Retention.Bytes != 2000 {
		t.Fatalf("bounds before the sweep: %+v", b)
	}
	sweep()
	// The log keeps 2,000 bytes or more: segments [0,60) go.
	b = bounds("every replica trimmed", 1, 2, 3)
	if b.Start != 60 || b.Bytes != 2000 {
		t.Fatalf("bounds after the sweep: %+v", b)
	}
	for _, n := range nodes[:3] {
		_, err := c.FetchFrom(ctx, n.ClientAddr(), &clientpb.FetchRequest{PartitionId: id, Offset: 59})
		st := status.Convert(err)
		var detail *clientpb.OutOfRange
		for _, d := range st.Details() {
			if o, ok := d.(*clientpb.OutOfRange); ok {
				detail = o
			}
		}
		if st.Code() != codes.OutOfRange || detail == nil || detail.GetLogStartOffset() != 60 || detail.GetHighWatermark() != 100 {
			t.Fatalf("node %d: fetch below the start: %v (detail %v)", n.cfg.NodeID, err, detail)
		}
		resp, err := c.FetchFrom(ctx, n.ClientAddr(), &clientpb.FetchRequest{PartitionId: id, Offset: 60})
		if err != nil || len(resp.GetRecords()) != 40 {
			t.Fatalf("node %d: fetch at the start: %v", n.cfg.NodeID, err)
		}
	}

	// A follower is down while more records come and go; it restarts
	// and applies the trim from its log.
	info, err := c.Describe(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f := int(info.GetLeaderNodeId()%3) + 1
	down := nodes[f-1]
	start := stop(t, down)
	nodes[f-1] = nil
	produce(50)
	sweep()
	nodes[f-1] = start()
	b = bounds("every replica trimmed again, the restarted one too", 1, 2, 3)
	if b.Start != 110 || b.HighWatermark != 150 {
		t.Fatalf("bounds after the second sweep: %+v", b)
	}

	// Node 4 joins by snapshot and holds what the others hold.
	if err := c.ChangeReplicas(ctx, id, []uint64{4}, nil); err != nil {
		t.Fatal(err)
	}
	b = bounds("node 4 caught up", 1, 2, 3, 4)
	if b.Start != 110 || b.HighWatermark != 150 || b.Retention.Bytes != 2000 {
		t.Fatalf("bounds with node 4: %+v", b)
	}
	if got := nodes[3].Metric("flotilla_store_snapshots_installed_total"); got < 1 {
		t.Fatalf("node 4 installed %v snapshots: it did not join by snapshot", got)
	}
	// Its records are in the Raft entries the snapshot brought, below its
	// own log: it serves them like the others.
	for _, n := range nodes {
		resp, err := c.FetchFrom(ctx, n.ClientAddr(), &clientpb.FetchRequest{PartitionId: id, Offset: 110})
		if err != nil || len(resp.GetRecords()) != 40 || string(resp.GetRecords()[0]) != fmt.Sprintf("%050d", 10) {
			t.Fatalf("node %d: fetch from the start after node 4 joined: %v", n.cfg.NodeID, err)
		}
	}

	// Retention by age, set later: everything older than 1 ms goes.
	if err := c.AlterPartition(ctx, id, &clientpb.Retention{RetentionMs: 1}); err != nil {
		t.Fatal(err)
	}
	bounds("every replica applied the new retention", 1, 2, 3, 4)
	// The records are older than 1 ms by the leader's clock once a
	// millisecond passed: sweep until they went.
	await.Until(t, 10*time.Second, "the leader trimmed by age", func() bool {
		sweep()
		b, err := nodes[0].partitionLog(id).Bounds()
		return err == nil && b.Start == 150
	})
	b = bounds("every replica emptied", 1, 2, 3, 4)
	if b.Start != 150 || b.HighWatermark != 150 || b.Bytes != 0 || b.Retention.Age != time.Millisecond {
		t.Fatalf("bounds after retention by age: %+v", b)
	}
	resp, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: id, Offset: 150})
	if err != nil || len(resp.GetRecords()) != 0 {
		t.Fatalf("fetch at the end of an emptied log: %v", err)
	}
	if _, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: id, Offset: 0}); status.Code(err) != codes.OutOfRange {
		t.Fatalf("fetch from 0 after everything went: %v", err)
	}
	if got := testutil.ToFloat64(nodes[int(info.GetLeaderNodeId())-1].rm.trims); got < 1 {
		t.Fatalf("retention trims counted: %v", got)
	}
}
