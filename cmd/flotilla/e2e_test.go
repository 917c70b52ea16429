package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// buildBinary builds the flotilla binary for the end-to-end test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flotilla")
	build := exec.Command("go", "build", "-tags", "pebblegozstd", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// proc is one node process. The test owns its listening sockets and hands
// them down (--listen-fd, --client-listen-fd), so ports are never raced
// for, and a restarted node comes back on the same addresses.
type proc struct {
	t    *testing.T
	bin  string
	id   int
	lis  *net.TCPListener // peers'
	clis *net.TCPListener // clients'
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := p.lis.File()
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	cf, err := p.clis.File()
	if err != nil {
		p.t.Fatal(err)
	}
	defer cf.Close()
	p.cmd = exec.Command(p.bin, append([]string{"node", "--listen-fd", "3", "--client-listen-fd", "4", "--metrics-listen", "127.0.0.1:0",
		"--log-level", "warn"}, p.args...)...)
	p.cmd.ExtraFiles = []*os.File{f, cf}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(ready) })
			}
		}
		_ = p.cmd.Wait()
	}()
	select {
	case <-ready:
	case <-p.done:
		p.t.Fatalf("node %d exited at start", p.id)
	case <-time.After(30 * time.Second):
		p.t.Fatalf("node %d did not start", p.id)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill() // kill -9
	<-p.done
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

// run runs the CLI and returns its output.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("flotilla %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestEndToEnd: three node processes; partitions created, produced to
// and fetched through the CLI and the client API; one node killed with
// SIGKILL while producing continues and restarted; afterwards every
// acknowledged record is on every replica exactly once, at its offset.
func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	var procs []*proc
	var peers, clients []string
	listen := func() *net.TCPListener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l.(*net.TCPListener)
	}
	for i := 1; i <= 3; i++ {
		p := &proc{t: t, bin: bin, id: i, lis: listen(), clis: listen()}
		procs = append(procs, p)
		peers = append(peers, fmt.Sprintf("%d=%s", i, p.lis.Addr()))
		clients = append(clients, fmt.Sprintf("%d=%s", i, p.clis.Addr()))
	}
	var endpoints []string
	for _, p := range procs {
		p.args = []string{"--cluster-id", "1", "--id", fmt.Sprint(p.id), "--peers", strings.Join(peers, ","),
			"--clients", strings.Join(clients, ","), "--data-dir", filepath.Join(t.TempDir(), "data")}
		endpoints = append(endpoints, p.clis.Addr().String())
		p.start()
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.stop()
		}
	})
	eps := "--endpoints=" + strings.Join(endpoints, ",")

	// The CLI.
	for id := 1; id <= 3; id++ {
		run(t, bin, "partition", "create", eps, "--id", fmt.Sprint(id), "--replicas", "1,2,3")
	}
	if out := run(t, bin, "produce", eps, "--partition", "1", "hello", "world"); !strings.Contains(out, "2 records at offsets 0..1") {
		t.Fatalf("produce: %s", out)
	}
	if out := run(t, bin, "fetch", eps, "--partition", "1", "--linearizable"); !strings.Contains(out, "0\thello\n1\tworld") {
		t.Fatalf("fetch: %s", out)
	}
	if out := run(t, bin, "partition", "describe", eps, "--id", "1"); !strings.Contains(out, "leader") {
		t.Fatalf("describe: %s", out)
	}
	if out := run(t, bin, "partition", "list", eps); strings.Count(out, "\n") != 4 {
		t.Fatalf("list: %s", out)
	}

	// The client API, with a node killed and restarted on the way.
	c, err := client.New(endpoints, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type ack struct {
		partition, offset uint64
		record            string
	}
	var mu sync.Mutex
	var acks []ack
	produce := func(partition uint64, n int, seq *uint64) {
		for i := 0; i < n; i++ {
			rec := fmt.Sprintf("p%d-r%d", partition, *seq)
			// Retried until acknowledged, with the same producer and
			// sequence: applied once whatever happened to earlier tries.
			for {
				resp, err := c.Produce(ctx, &clientpb.ProduceRequest{PartitionId: partition, Records: [][]byte{[]byte(rec)},
					ProducerId: 100 + partition, Sequence: *seq})
				if err == nil {
					mu.Lock()
					acks = append(acks, ack{partition, resp.GetBaseOffset(), rec})
					mu.Unlock()
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("produce %s: %v", rec, err)
				}
			}
			*seq++
		}
	}
	seqs := map[uint64]*uint64{2: new(uint64), 3: new(uint64)}
	phase := func(n int) {
		var wg sync.WaitGroup
		for partition, seq := range seqs {
			wg.Add(1)
			go func() { defer wg.Done(); produce(partition, n, seq) }()
		}
		wg.Wait()
	}
	phase(30)
	victim := procs[1]
	victim.kill()
	phase(30) // a leader may have died: the client follows the new one
	victim.start()
	phase(30)

	// Every replica ends with every acknowledged record, once, at its offset.
	for _, addr := range endpoints {
		for partition := range seqs {
			var got []string
			await.Until(t, 60*time.Second, "replica "+addr+" caught up", func() bool {
				resp, err := c.FetchFrom(ctx, addr, &clientpb.FetchRequest{PartitionId: partition, MaxRecords: 1000})
				if err != nil || len(resp.GetRecords()) < 90 {
					return false
				}
				got = got[:0]
				for _, r := range resp.GetRecords() {
					got = append(got, string(r))
				}
				return true
			})
			seen := map[string]int{}
			for _, r := range got {
				seen[r]++
			}
			for _, a := range acks {
				if a.partition != partition {
					continue
				}
				if a.offset >= uint64(len(got)) || got[a.offset] != a.record || seen[a.record] != 1 {
					t.Fatalf("%s partition %d: %q acknowledged at %d, replica has %d copies, log %q", addr, partition, a.record, a.offset, seen[a.record], got)
				}
			}
		}
	}
}
