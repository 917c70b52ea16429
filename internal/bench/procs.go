package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/client"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// procCluster is `flotilla node` processes (--procs; three, or four for
// catchup-1g, whose fourth starts later), each on its own directory under
// the run's root and on a socket this process owns and hands down (so a
// restarted node comes back on its address). The workload drives them
// through the client API; their figures come from their /metrics
// endpoints and /proc.
type procCluster struct {
	bin         string
	dir         string
	args        []string           // extra flags of every node
	lis         []*net.TCPListener // peers'
	clis        []*net.TCPListener // clients'
	peers       string
	clientAddrs string
	conns       []*grpc.ClientConn
	clients     []clientpb.PartitionsClient
	http        *http.Client

	mu struct {
		sync.Mutex
		procs     []*nodeProc // nil while stopped
		exitedCPU time.Duration
	}
}

// nodeProc is one running node process.
type nodeProc struct {
	cmd     *exec.Cmd
	metrics string // its /metrics URL
	done    chan struct{}
}

// procStartTimeout bounds how long a node process takes to serve (a node
// with many groups loads them all first).
const procStartTimeout = 2 * time.Minute

func startProcs(ctx context.Context, dir, bin string, pprof bool) (_ *procCluster, err error) {
	if pprof {
		return startProcsN(ctx, dir, bin, 3, 3, "--pprof")
	}
	return startProcsN(ctx, dir, bin, 3, 3)
}

// startProcsN makes a cluster of n nodes and starts the first start of
// them (startNode starts the others), each with the extra flags args.
func startProcsN(ctx context.Context, dir, bin string, n, start int, args ...string) (_ *procCluster, err error) {
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: the flotilla binary for --procs: %w", err)
		}
	}
	c := &procCluster{bin: bin, dir: dir, args: args, http: &http.Client{Timeout: 10 * time.Second},
		lis: make([]*net.TCPListener, n), clis: make([]*net.TCPListener, n),
		conns: make([]*grpc.ClientConn, n), clients: make([]clientpb.PartitionsClient, n)}
	c.mu.procs = make([]*nodeProc, n)
	defer func() {
		if err != nil {
			_ = c.close()
		}
	}()
	var peers, clients []string
	for i := range c.lis {
		for _, lis := range []**net.TCPListener{&c.lis[i], &c.clis[i]} {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			*lis = l.(*net.TCPListener)
		}
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, c.lis[i].Addr()))
		clients = append(clients, fmt.Sprintf("%d=%s", i+1, c.clis[i].Addr()))
	}
	c.peers, c.clientAddrs = strings.Join(peers, ","), strings.Join(clients, ",")
	for i := range c.lis {
		if i < start {
			if err := c.startNode(ctx, i); err != nil {
				return nil, err
			}
		}
		cc, err := grpc.NewClient("passthrough:///"+c.clis[i].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		c.conns[i], c.clients[i] = cc, clientpb.NewPartitionsClient(cc)
	}
	return c, nil
}

// startNode starts node i's process and waits until it serves.
func (c *procCluster) startNode(ctx context.Context, i int) error {
	f, err := c.lis[i].File()
	if err != nil {
		return err
	}
	defer f.Close()
	cf, err := c.clis[i].File()
	if err != nil {
		return err
	}
	defer cf.Close()
	cmd := exec.Command(c.bin, "node", "--cluster-id", "1", "--id", strconv.Itoa(i+1), "--listen-fd", "3", "--client-listen-fd", "4",
		"--peers", c.peers, "--clients", c.clientAddrs, "--data-dir", filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1)),
		"--metrics-listen", "127.0.0.1:0", "--log-level", "warn",
		"--memtable-size", strconv.Itoa(benchMemTableSize),
		"--tick", benchTick.String(), "--election-ticks", strconv.Itoa(benchElectTicks))
	cmd.Args = append(cmd.Args, c.args...)
	cmd.ExtraFiles = []*os.File{f, cf}
	// A node never outlives the bench, however the bench ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logFile, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("node-%d.log", i+1)))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: start node %d (%s): %w", i+1, c.bin, err)
	}
	p := &nodeProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), " metrics on "); ok {
				ready <- url
			}
		}
		_ = cmd.Wait()
	}()
	timer := time.NewTimer(procStartTimeout)
	defer timer.Stop()
	select {
	case p.metrics = <-ready:
	case <-p.done:
		return fmt.Errorf("bench: node %d exited at start (see %s)", i+1, logFile.Name())
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("bench: node %d did not serve within %s", i+1, procStartTimeout)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-p.done
		return ctx.Err()
	}
	c.mu.Lock()
	c.mu.procs[i] = p
	c.mu.Unlock()
	return nil
}

func (c *procCluster) proc(i int) *nodeProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.procs[i]
}

func (c *procCluster) up(node uint64) bool {
	return node >= 1 && node <= uint64(len(c.lis)) && c.proc(int(node-1)) != nil
}

// stop kills node i (SIGKILL: a crash) and waits for it.
func (c *procCluster) stop(i int) error {
	c.mu.Lock()
	p := c.mu.procs[i]
	c.mu.procs[i] = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	if st := p.cmd.ProcessState; st != nil {
		c.mu.Lock()
		c.mu.exitedCPU += st.UserTime() + st.SystemTime()
		c.mu.Unlock()
	}
	return nil
}

func (c *procCluster) restart(i int) error { return c.startNode(context.Background(), i) }

func (c *procCluster) close() error {
	for i := range c.lis {
		_ = c.stop(i)
	}
	for i := range c.lis {
		if c.conns[i] != nil {
			_ = c.conns[i].Close()
		}
		if c.lis[i] != nil {
			_ = c.lis[i].Close()
		}
		if c.clis[i] != nil {
			_ = c.clis[i].Close()
		}
	}
	return nil
}

// createGroups creates partitions 1..n through node 1, which asks every
// node to host a replica.
func (c *procCluster) createGroups(ctx context.Context, n int) error {
	sem := make(chan struct{}, 32)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for g := 1; g <= n && ctx.Err() == nil; g++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req := &clientpb.CreatePartitionRequest{PartitionId: uint64(g), ReplicaNodeIds: []uint64{1, 2, 3}}
			if _, err := c.clients[0].CreatePartition(ctx, req); err != nil {
				select {
				case errs <- fmt.Errorf("bench: create partition %d: %w", g, err):
				default:
				}
			}
		}()
		select {
		case err := <-errs:
			wg.Wait()
			return err
		default:
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}

// leaders asks every running node which partitions it leads.
func (c *procCluster) leaders(n int) ([]uint64, int) {
	out := make([]uint64, n+1)
	led := 0
	for i := range c.clients {
		if c.proc(i) == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.clients[i].ListPartitions(ctx, &clientpb.ListPartitionsRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, p := range resp.GetPartitions() {
			if id := p.GetPartitionId(); id >= 1 && id <= uint64(n) && p.GetRole() == "leader" && out[id] == 0 {
				out[id] = uint64(i + 1)
				led++
			}
		}
	}
	return out, led
}

func (c *procCluster) knownLeader(g uint64) uint64 {
	for i := range c.clients {
		if c.proc(i) == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.clients[i].DescribePartition(ctx, &clientpb.DescribePartitionRequest{PartitionId: g})
		cancel()
		if err == nil && info.GetLeaderNodeId() != 0 {
			return info.GetLeaderNodeId()
		}
	}
	return 0
}

func (c *procCluster) propose(ctx context.Context, node, g uint64, p *payload) error {
	_, err := c.clients[node-1].Produce(ctx, &clientpb.ProduceRequest{PartitionId: g, Records: [][]byte{p.record}})
	return hostError(g, err)
}

func (c *procCluster) transfer(ctx context.Context, g, from, to uint64) error {
	_, err := c.clients[from-1].TransferLeadership(ctx, &clientpb.TransferLeadershipRequest{PartitionId: g, ToNodeId: to})
	return hostError(g, err)
}

// hostError turns a client API error back into the host's, as the
// workloads classify them.
func hostError(g uint64, err error) error {
	if err == nil {
		return nil
	}
	if nl := client.NotLeader(err); nl != nil {
		return &multiraft.NotLeaderError{GroupID: multiraft.GroupID(g), Leader: multiraft.NodeID(nl.GetLeaderNodeId())}
	}
	switch status.Code(err) {
	case codes.ResourceExhausted:
		retry := 100 * time.Millisecond
		if d := client.Exhausted(err); d != nil && d.GetRetryAfterMs() > 0 {
			retry = time.Duration(d.GetRetryAfterMs()) * time.Millisecond
		}
		return &multiraft.BusyError{Reason: err.Error(), RetryAfter: retry}
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %w", multiraft.ErrAmbiguous, err)
	case codes.Unavailable:
		return fmt.Errorf("%w: %w", multiraft.ErrStopped, err)
	case codes.NotFound:
		return fmt.Errorf("%w: %w", multiraft.ErrGroupNotFound, err)
	}
	return err
}

// metrics scrapes node i's /metrics.
func (c *procCluster) metrics(i int, names []string) ([]float64, bool) {
	families, ok := c.scrape(i)
	if !ok {
		return nil, false
	}
	out := make([]float64, len(names))
	for j, name := range names {
		for _, m := range families[name].GetMetric() {
			out[j] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out, true
}

func (c *procCluster) histogram(i int, name string) (buckets, bool) {
	families, ok := c.scrape(i)
	if !ok {
		return buckets{}, false
	}
	var h buckets
	h.add(families[name].GetMetric())
	return h, true
}

// scrape reads node i's /metrics.
func (c *procCluster) scrape(i int) (map[string]*dto.MetricFamily, bool) {
	p := c.proc(i)
	if p == nil {
		return nil, false
	}
	resp, err := c.http.Get(p.metrics)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	return families, err == nil
}

// each calls fn with the PID of every running node.
func (c *procCluster) each(fn func(pid int)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.mu.procs {
		if p != nil {
			fn(p.cmd.Process.Pid)
		}
	}
}

func (c *procCluster) cpu() time.Duration {
	var total time.Duration
	c.each(func(pid int) { total += procCPU(pid) })
	c.mu.Lock()
	defer c.mu.Unlock()
	return total + c.mu.exitedCPU
}

func (c *procCluster) rss() (total int64) {
	c.each(func(pid int) { total += procStatus(pid, "VmRSS:") })
	return total
}

// peakRSS is the sum of the nodes' peaks (an upper bound of their peak
// together).
func (c *procCluster) peakRSS() (total int64) {
	c.each(func(pid int) { total += procStatus(pid, "VmHWM:") })
	return total
}

func (c *procCluster) resetPeak() {
	c.each(func(pid int) { _ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) })
}

func (c *procCluster) electionTimeout() time.Duration { return benchElectTicks * benchTick }

// procCPU is a process's user plus system time, from /proc/PID/stat
// (in clock ticks of 1/100 s, Linux's USER_HZ).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procStatus reads a size field (in kB) of /proc/PID/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return statusField(b, field)
}

func statusField(b []byte, field string) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kib, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kib << 10
				}
			}
		}
	}
	return 0
}

// profileNode fetches node 1's CPU profile over the measured window into
// cfg.NodeProfile, if asked; the channel gives the outcome once the
// window's profile is written (nil at once if none was asked).
func profileNode(ctx context.Context, c cluster, cfg Config) <-chan error {
	done := make(chan error, 1)
	pc, ok := c.(*procCluster)
	if cfg.NodeProfile == "" || !ok {
		done <- nil
		return done
	}
	pc.mu.Lock()
	p := pc.mu.procs[0]
	pc.mu.Unlock()
	if p == nil {
		done <- fmt.Errorf("bench: node 1 is not running: no profile")
		return done
	}
	url := strings.TrimSuffix(p.metrics, "/metrics") + fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(cfg.Duration.Seconds())))
	go func() {
		done <- func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := (&http.Client{Timeout: cfg.Duration + time.Minute}).Do(req)
			if err != nil {
				return fmt.Errorf("bench: node 1's profile: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("bench: node 1's profile: %s", resp.Status)
			}
			f, err := os.Create(cfg.NodeProfile)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				_ = f.Close()
				return err
			}
			return f.Close()
		}()
	}()
	return done
}
