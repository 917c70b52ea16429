package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/internal/node"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// TestNodeExitsWhenHostFails: a node whose host fails (here a WAL sync
// fails) stops serving and says why, and `flotilla node` returns the
// failure, so the process exits non-zero for its supervisor to restart it.
func TestNodeExitsWhenHostFails(t *testing.T) {
	var failSyncs atomic.Bool
	nodes, err := node.LocalCluster(1, t.TempDir(), func(cfg *node.Config) {
		cfg.Host = func(hc *multiraft.Config) {
			hc.TickInterval = 20 * time.Millisecond
			hc.MemTableSize = 4 << 20
			hc.FS = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
				switch op.Kind {
				case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
					if failSyncs.Load() && strings.HasSuffix(op.Path, ".log") {
						return errorfs.ErrInjected
					}
				}
				return nil
			}))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	n := nodes[0]
	var out, errOut bytes.Buffer
	served := make(chan error, 1)
	go func() { served <- serveNode(n, 1, nil, time.Second, &out, &errOut) }()

	c, err := client.New([]string{n.ClientAddr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreatePartition(ctx, 1, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	failSyncs.Store(true)
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := c.Produce(pctx, &clientpb.ProduceRequest{PartitionId: 1, Records: [][]byte{[]byte("lost")}}); err == nil {
		t.Fatal("a record was acknowledged by a node whose WAL sync failed")
	}
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "host failed") {
			t.Fatalf("flotilla node returned %v, want the host's failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("flotilla node kept running on a failed host")
	}
	if !strings.Contains(errOut.String(), "host failed, exiting") || !strings.Contains(errOut.String(), "sync") {
		t.Fatalf("stderr %q does not say why the node exits", errOut.String())
	}
}

// TestNodeRefusesAnotherNodesData: the data directory remembers the
// cluster and node it belongs to; `flotilla node` started on it as
// another exits non-zero saying what is stored and what was asked, and a
// second node on a directory in use says so in words.
func TestNodeRefusesAnotherNodesData(t *testing.T) {
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	start := func(clusterID string) (*exec.Cmd, *bytes.Buffer) {
		t.Helper()
		var errOut bytes.Buffer
		cmd := exec.Command(bin, "node", "--cluster-id", clusterID, "--id", "1", "--listen", "127.0.0.1:0",
			"--metrics-listen", "", "--data-dir", dir, "--log-level", "warn")
		cmd.Stderr = &errOut
		return cmd, &errOut
	}
	running, _ := start("1")
	stdout, err := running.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = running.Process.Kill(); _ = running.Wait() }()
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(listening)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-listening:
	case <-time.After(time.Minute):
		t.Fatal("the node did not start")
	}

	second, errOut := start("1")
	if err := second.Run(); !exitedNonZero(err) || !strings.Contains(errOut.String(), "used by another running node") {
		t.Fatalf("a second node on a directory in use: %v, stderr %q", err, errOut.String())
	}
	if err := running.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := running.Wait(); err != nil {
		t.Fatalf("the node did not stop cleanly: %v", err)
	}

	wrong, errOut := start("2")
	err = wrong.Run()
	if !exitedNonZero(err) || !strings.Contains(errOut.String(), "holds the data of node 1 of cluster 1") ||
		!strings.Contains(errOut.String(), "started as node 1 of cluster 2") {
		t.Fatalf("node 1 of cluster 2 on cluster 1's data: %v, stderr %q", err, errOut.String())
	}
}

func exitedNonZero(err error) bool {
	var exit *exec.ExitError
	return errors.As(err, &exit) && exit.ExitCode() != 0
}
