package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/internal/node"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// TestFetchCommandLargeRecords: `flotilla fetch` reads 4,200-byte records
// with the node's default response size (which fits any gRPC client),
// and with --max-bytes a response above gRPC's default 4 MiB receive
// limit, which the CLI raises.
func TestFetchCommandLargeRecords(t *testing.T) {
	nodes, err := node.LocalCluster(1, t.TempDir(), func(cfg *node.Config) {
		cfg.Host = func(hc *multiraft.Config) {
			hc.TickInterval, hc.Workers, hc.MemTableSize = 20*time.Millisecond, 2, 4<<20
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nodes[0].Close() })
	addr := nodes[0].ClientAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New([]string{addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.CreatePartition(ctx, 1, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	var recs [][]byte
	for i := range 1000 {
		recs = append(recs, bytes.Repeat([]byte{byte('a' + i%26)}, 4200))
	}
	for i := 0; i < len(recs); i += 200 {
		if _, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: 1, Records: recs[i : i+200]}); err != nil {
			t.Fatal(err)
		}
	}
	fetch := func(args ...string) []string {
		t.Helper()
		cmd := fetchCmd()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"--endpoints", addr, "--partition", "1", "--max", "1000"}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("flotilla fetch %v: %v", args, err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		for i, l := range lines {
			if want := fmt.Sprintf("%d\t%s", i, recs[i]); l != want {
				t.Fatalf("flotilla fetch %v: line %d is %.20q..., want %.20q...", args, i, l, want)
			}
		}
		return lines
	}
	if n := len(fetch()); n == 0 || n*4203 > clientpb.DefaultFetchResponseBytes {
		t.Fatalf("a default fetch printed %d records", n)
	}
	if n := len(fetch("--max-bytes", "8388608")); n != len(recs) {
		t.Fatalf("a fetch of up to 8 MiB printed %d records, want %d", n, len(recs))
	}
}
