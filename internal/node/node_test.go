package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastTicks makes elections take a fraction of a second.
func fastTicks(cfg *Config) {
	cfg.Host = func(hc *multiraft.Config) {
		hc.TickInterval = 20 * time.Millisecond
		hc.Workers = 2
		hc.MemTableSize = 4 << 20
	}
}

func startCluster(t *testing.T) ([]*Node, *client.Client) {
	t.Helper()
	nodes, err := LocalCluster(3, t.TempDir(), fastTicks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if err := n.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	c, err := client.New([]string{nodes[0].ClientAddr(), nodes[1].ClientAddr(), nodes[2].ClientAddr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return nodes, c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPartitionLifecycle: create, produce through any node (the client
// follows the leader), fetch from every replica, idempotent retries,
// describe and list, transfer, delete; bad requests get clear statuses.
func TestPartitionLifecycle(t *testing.T) {
	nodes, c := startCluster(t)
	ctx := ctxT(t)
	if err := c.CreatePartition(ctx, 7, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	var records [][]byte
	for i := range 20 {
		rec := fmt.Appendf(nil, "record-%d", i)
		resp, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7, Records: [][]byte{rec}, ProducerId: 42, Sequence: uint64(i)})
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
		if resp.GetBaseOffset() != uint64(i) {
			t.Fatalf("record %d at offset %d", i, resp.GetBaseOffset())
		}
		records = append(records, rec)
	}
	// A retry of the last batch gets its original offset.
	resp, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7, Records: records[19:], ProducerId: 42, Sequence: 19})
	if err != nil || !resp.GetDuplicate() || resp.GetBaseOffset() != 19 {
		t.Fatalf("retry: %v, %v", resp, err)
	}
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7, Records: records[:1], ProducerId: 42, Sequence: 30}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("out-of-order sequence: %v", err)
	}
	// Every replica serves what it applied; a linearizable fetch sees all.
	for _, n := range nodes {
		await.Until(t, 10*time.Second, "replica caught up", func() bool {
			r, err := c.FetchFrom(ctx, n.ClientAddr(), &clientpb.FetchRequest{PartitionId: 7})
			return err == nil && len(r.GetRecords()) == 20
		})
		r, err := c.FetchFrom(ctx, n.ClientAddr(), &clientpb.FetchRequest{PartitionId: 7, Offset: 5, MaxRecords: 3, Linearizable: true})
		if err != nil || len(r.GetRecords()) != 3 || !bytes.Equal(r.GetRecords()[0], records[5]) || r.GetHighWatermark() != 20 {
			t.Fatalf("node %d fetch: %v %v", n.cfg.NodeID, r, err)
		}
	}
	// A follower answers a produce with the leader's identity.
	info, err := c.Describe(ctx, 7)
	if err != nil || info.GetRole() != "leader" || len(info.GetReplicaNodeIds()) != 3 || info.GetHighWatermark() != 20 {
		t.Fatalf("describe: %v %v", info, err)
	}
	leader := info.GetLeaderNodeId()
	follower := nodes[leader%3]
	_, err = direct(t, follower.ClientAddr()).Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7, Records: records[:1]})
	nl := client.NotLeader(err)
	if nl == nil || nl.GetLeaderNodeId() != leader || nl.GetLeaderAddress() != nodes[leader-1].ClientAddr() {
		t.Fatalf("produce on a follower: %v (detail %v)", err, nl)
	}
	// Bad requests.
	for name, tc := range map[string]struct {
		err  error
		code codes.Code
	}{
		"unknown partition": {func() error {
			_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 99, Records: records[:1]})
			return err
		}(), codes.NotFound},
		"empty batch": {func() error { _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7}); return err }(), codes.InvalidArgument},
		// Over the request size limit: gRPC refuses it unread.
		"oversized request": {func() error {
			_, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 7, Records: [][]byte{make([]byte, 2<<20)}})
			return err
		}(), codes.ResourceExhausted},
		"bad offset":  {func() error { _, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 7, Offset: 21}); return err }(), codes.OutOfRange},
		"bad replica": {c.CreatePartition(ctx, 8, []uint64{1, 9}), codes.InvalidArgument},
	} {
		if status.Code(tc.err) != tc.code {
			t.Errorf("%s: %v, want %s", name, tc.err, tc.code)
		}
	}
	// Transfer, then list on every node.
	to := leader%3 + 1
	if err := c.TransferLeadership(ctx, 7, to); err != nil {
		t.Fatal(err)
	}
	await.Until(t, 10*time.Second, "the new leader", func() bool {
		info, err := c.Describe(ctx, 7)
		return err == nil && info.GetLeaderNodeId() == to
	})
	// Delete: gone everywhere, and the ID cannot come back.
	if err := c.DeletePartition(ctx, 7); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if len(n.Host().Groups()) != 0 || n.partitionLog(7) != nil {
			t.Fatalf("node %d still hosts %v (or keeps partition 7's log)", n.cfg.NodeID, n.Host().Groups())
		}
	}
	if _, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 7}); status.Code(err) != codes.NotFound {
		t.Fatalf("fetch of a deleted partition: %v", err)
	}
	if err := c.CreatePartition(ctx, 7, []uint64{1, 2, 3}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a deleted partition's ID used again: %v", err)
	}
}

// direct is a client of one node, which follows no leader.
func direct(t *testing.T, addr string) clientpb.PartitionsClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return clientpb.NewPartitionsClient(cc)
}

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is
// exported by a running node that has done some work.
func TestDashboardMetricsExist(t *testing.T) {
	nodes, c := startCluster(t)
	ctx := ctxT(t)
	if err := c.CreatePartition(ctx, 1, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: [][]byte{[]byte("r")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, &clientpb.FetchRequest{PartitionId: 1, Linearizable: true}); err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, n := range nodes {
		families, err := n.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			exported[f.GetName()] = true
		}
	}
	raw, err := os.ReadFile("../../deploy/grafana/flotilla.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	names := regexp.MustCompile(`flotilla_[a-z0-9_]+`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range names.FindAllString(tg.Expr, -1) {
				queried++
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && exported[b] {
						base = b
					}
				}
				if !exported[base] {
					t.Errorf("panel %q queries %s, which no node exports", p.Title, name)
				}
			}
		}
	}
	if queried < 20 {
		t.Fatalf("the dashboard queries only %d metrics", queried)
	}
	// The example alert rules too.
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	alerted := names.FindAllString(string(rules), -1)
	for _, name := range alerted {
		if !exported[name] {
			t.Errorf("the alert rules query %s, which no node exports", name)
		}
	}
	if len(alerted) < 4 {
		t.Fatalf("the alert rules query only %d metrics", len(alerted))
	}
}

// TestChangeReplicas: a partition moves from nodes 1-3 to 2-4 through the
// client API; the new replica serves every record.
func TestChangeReplicas(t *testing.T) {
	nodes, err := LocalCluster(4, t.TempDir(), fastTicks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	})
	c, err := client.New([]string{nodes[0].ClientAddr(), nodes[1].ClientAddr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if err := c.CreatePartition(ctx, 3, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 3, Records: [][]byte{fmt.Appendf(nil, "r%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ChangeReplicas(ctx, 3, []uint64{4}, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	await.Until(t, 20*time.Second, "the new replica set", func() bool {
		info, err := c.Describe(ctx, 3)
		return err == nil && fmt.Sprint(info.GetReplicaNodeIds()) == "[2 3 4]"
	})
	await.Until(t, 20*time.Second, "node 4 serving every record", func() bool {
		r, err := c.FetchFrom(ctx, nodes[3].ClientAddr(), &clientpb.FetchRequest{PartitionId: 3})
		return err == nil && len(r.GetRecords()) == 10
	})
}
