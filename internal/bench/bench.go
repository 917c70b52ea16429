package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-io/flotilla/multiraft"
)

// Config is one run.
type Config struct {
	Workload  string
	Groups    int
	Payload   int
	Proposers int
	// Entries is how many entries each group gets before restart-10k's
	// restart.
	Entries  int
	Warmup   time.Duration
	Duration time.Duration
	// Dir is where the run's temporary root goes ("": the system's).
	Dir string
	// Progress receives a line per second.
	Progress io.Writer
	// Procs runs the nodes as three `flotilla node` processes of Binary
	// (default: this executable), driven through the client API.
	Procs  bool
	Binary string
	// NodeProfile, with Procs, is where node 1's CPU profile of the
	// measured window goes (the nodes serve /debug/pprof/ for it).
	NodeProfile string
	// SM is the groups' state machine: "partition" (the default, the
	// reference node's partition log) or "noop" (one that does nothing,
	// as other libraries' benchmarks use: the like-for-like figure; in
	// process only).
	SM string
	// Quick scales a workload down for `make bench-workloads`: a tenth of
	// the idle and restart groups and of the entries, at most 2,000
	// proposers, 5 s windows after 2 s of warm-up (unless set).
	Quick bool
}

// Workloads are BENCH.md's, with their shapes.
var Workloads = map[string]Config{
	"write-48":     {Groups: 48, Payload: 16, Proposers: 10000},
	"write-48-128": {Groups: 48, Payload: 128, Proposers: 10000},
	"write-1k":     {Groups: 1000, Payload: 128, Proposers: 10000},
	"latency-48":   {Groups: 48, Payload: 16, Proposers: 48},
	"idle-10k":     {Groups: 10000},
	"idle-100k":    {Groups: 100000},
	"restart-10k":  {Groups: 10000, Payload: 16, Proposers: 1000, Entries: 1000},
	"failover-1k":  {Groups: 1000, Payload: 128, Proposers: 10000},
	// failover-idle-10k: idle-10k, then one host is killed.
	"failover-idle-10k": {Groups: 10000},
	// catchup-1g: a replica added on a fresh node to a 1 GiB partition
	// (--procs only; see catchup.go).
	"catchup-1g": {Groups: 1, Payload: catchupRecord},
}

// Names lists the workloads in BENCH.md's order.
var Names = []string{"write-48", "write-48-128", "write-1k", "latency-48", "idle-10k", "idle-100k", "restart-10k", "failover-1k", "failover-idle-10k", "catchup-1g"}

// Report is what a run measured. Rates are over the measured window.
type Report struct {
	Workload          string    `json:"workload"`
	SM                string    `json:"state_machine,omitempty"`
	Quick             bool      `json:"scaled_down,omitempty"`
	Runs              int       `json:"runs,omitempty"`     // > 1: every figure is the median over this many runs
	Each              []*Report `json:"each_run,omitempty"` // the runs behind a median
	Groups            int       `json:"groups"`
	Payload           int       `json:"payload_bytes"`
	Proposers         int       `json:"proposers"`
	Seconds           float64   `json:"window_seconds"`
	Proposals         uint64    `json:"proposals"`
	ProposalsPerSec   float64   `json:"proposals_per_sec"`
	P50Ms             float64   `json:"p50_ms"`
	P99Ms             float64   `json:"p99_ms"`
	P999Ms            float64   `json:"p999_ms"`
	FsyncsPerSecHost  float64   `json:"fsyncs_per_sec_per_host"`
	ProposalsPerSync  float64   `json:"proposals_per_fsync"`
	FramesPerSec      float64   `json:"peer_frames_per_sec"`
	MsgsPerFrame      float64   `json:"messages_per_frame"`
	HeartbeatsPerSec  float64   `json:"heartbeat_messages_per_sec"`
	WireRecordsPerSec float64   `json:"wire_records_per_sec"` // Raft messages, heartbeat records and liveness records
	CPUCores          float64   `json:"cpu_seconds_per_sec"`
	// Per committed proposal, over all hosts: CPU, and the bytes Pebble
	// took in its WAL and wrote in flushes and compactions.
	CPUMicrosPerProposal      float64 `json:"cpu_us_per_proposal,omitempty"`
	WALBytesPerProposal       float64 `json:"wal_bytes_per_proposal,omitempty"`
	FlushedBytesPerProposal   float64 `json:"flushed_bytes_per_proposal,omitempty"`
	CompactedBytesPerProposal float64 `json:"compacted_bytes_per_proposal,omitempty"`
	// The log writer's WAL syncs over the window, all hosts (bucket upper
	// bounds; -1: beyond the histogram's last, 26 s): the floor under a
	// proposal's latency.
	SyncP50Ms        float64           `json:"log_sync_p50_ms,omitempty"`
	SyncP99Ms        float64           `json:"log_sync_p99_ms,omitempty"`
	PeakRSS          int64             `json:"peak_rss_bytes"`
	LeaderChanges    float64           `json:"leader_changes"`        // a group's new leader serving, counted once
	Campaigns        float64           `json:"campaigns"`             // elections and pre-votes started, by any replica
	LivenessChanges  float64           `json:"peer_liveness_changes"` // peers seen dead, live again or restarted, by any host
	Errors           map[string]uint64 `json:"errors"`
	ElectSeconds     float64           `json:"elect_all_seconds,omitempty"` // -1: not all within 2 minutes
	LedGroups        int               `json:"led_groups,omitempty"`
	RSSPerReplica    float64           `json:"rss_per_replica_bytes,omitempty"`
	RestartSeconds   float64           `json:"restart_serving_seconds,omitempty"`
	FailoverTimeouts float64           `json:"failover_election_timeouts,omitempty"`
	RecoverySeconds  float64           `json:"recovery_seconds,omitempty"`
	// catchup-1g: from adding the replica to it serving every record; the
	// bytes it then holds, per second of that; its process's peak RSS
	// above its RSS before the add; snapshots it installed.
	CatchupSeconds     float64 `json:"catchup_seconds,omitempty"`
	CatchupBytes       int64   `json:"catchup_bytes,omitempty"`
	CatchupBytesPerSec float64 `json:"catchup_bytes_per_sec,omitempty"`
	ReceiverRSSGrowth  int64   `json:"receiver_peak_rss_growth_bytes,omitempty"`
	CatchupSnapshots   float64 `json:"catchup_snapshots_installed,omitempty"`
}

// Run runs one workload; cfg's zero fields take the workload's shape.
// Everything it writes lives under one temporary root, removed when it
// returns (also when ctx is cancelled or the run fails).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	shape, ok := Workloads[cfg.Workload]
	if !ok {
		return nil, fmt.Errorf("bench: unknown workload %q (have %v)", cfg.Workload, Names)
	}
	fill := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	fill(&cfg.Groups, shape.Groups)
	fill(&cfg.Payload, shape.Payload)
	fill(&cfg.Proposers, shape.Proposers)
	fill(&cfg.Entries, shape.Entries)
	if cfg.Quick {
		if cfg.Groups == shape.Groups && shape.Groups >= 10000 {
			cfg.Groups /= 10
		}
		if cfg.Entries == shape.Entries {
			cfg.Entries /= 10
		}
		cfg.Proposers = min(cfg.Proposers, 2000)
		if cfg.Duration == 0 {
			cfg.Duration = 5 * time.Second
		}
		if cfg.Warmup == 0 {
			cfg.Warmup = 2 * time.Second
		}
	}
	if cfg.Duration == 0 {
		cfg.Duration = 60 * time.Second
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = 10 * time.Second
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	root, err := os.MkdirTemp(cfg.Dir, "flotilla-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	// What earlier runs in this process left goes back first.
	debug.FreeOSMemory()
	if cfg.Workload == "catchup-1g" {
		r := &Report{Workload: cfg.Workload, Quick: cfg.Quick, Errors: map[string]uint64{}}
		return r, runCatchup(ctx, root, cfg, r)
	}
	var c cluster
	switch {
	case cfg.SM != "" && cfg.SM != "partition" && cfg.SM != "noop":
		return nil, fmt.Errorf("bench: state machine %q (have partition, noop)", cfg.SM)
	case cfg.NodeProfile != "" && !cfg.Procs:
		return nil, errors.New("bench: --node-cpuprofile profiles a node process: it needs --procs")
	case cfg.Procs && cfg.SM == "noop":
		return nil, errors.New("bench: --sm noop runs in process only (node processes run partition logs)")
	case cfg.Procs:
		c, err = startProcs(ctx, root, cfg.Binary, cfg.NodeProfile != "")
	default:
		c, err = startLocal(root, cfg.SM == "noop")
	}
	if err != nil {
		return nil, err
	}
	defer c.close()
	c.resetPeak() // the peak RSS is this run's
	r := &Report{Workload: cfg.Workload, SM: cfg.SM, Quick: cfg.Quick, Groups: cfg.Groups, Payload: cfg.Payload, Proposers: cfg.Proposers, Errors: map[string]uint64{}}
	switch cfg.Workload {
	case "idle-10k", "idle-100k":
		r.Proposers = 0
		err = runIdle(ctx, c, cfg, r)
	case "failover-idle-10k":
		r.Proposers = 0
		err = runFailoverIdle(ctx, c, cfg, r)
	case "restart-10k":
		err = runRestart(ctx, c, cfg, r)
	case "failover-1k":
		err = runWrite(ctx, c, cfg, r, true)
	default:
		err = runWrite(ctx, c, cfg, r, false)
	}
	r.PeakRSS = c.peakRSS()
	return r, err
}

// window samples the hosts' counters and the process at its start and
// fills the rates of a report at its end. Counters are taken per node and
// only nodes running at both ends count (failover stops one).
type window struct {
	c     cluster
	start time.Time
	cpu   time.Duration
	at    [][nWindow]float64 // per node, windowMetrics
	syncs []buckets          // per node, the log writer's sync durations
	// syncsOK: whether each node's histogram was read at the start.
	syncsOK []bool
}

const syncHistogram = "flotilla_store_log_sync_duration_seconds"

// syncSamples reads each node's sync histogram (ok false for a node not
// running).
func syncSamples(c cluster) ([]buckets, []bool) {
	hs, oks := make([]buckets, 3), make([]bool, 3)
	for i := range hs {
		hs[i], oks[i] = c.histogram(i, syncHistogram)
	}
	return hs, oks
}

const nWindow = 12

var windowMetrics = [nWindow]string{"flotilla_store_log_batches_total", "flotilla_transport_frames_sent_total",
	"flotilla_transport_messages_sent_total", "flotilla_transport_heartbeats_coalesced_total",
	"flotilla_host_leaderships_acquired_total", "flotilla_host_elections_total", "flotilla_transport_liveness_sent_total",
	"flotilla_host_peer_liveness_changes_total",
	"flotilla_store_log_bytes_total", "flotilla_store_apply_bytes_total",
	"flotilla_store_pebble_flushed_bytes_total", "flotilla_store_pebble_compacted_bytes_total"}

func openWindow(c cluster) *window {
	syncs, ok := syncSamples(c)
	return &window{c: c, start: time.Now(), cpu: c.cpu(), at: samples(c), syncs: syncs, syncsOK: ok}
}

// samples reads the window's counters of each node (NaN-free zero for a
// stopped node, marked by a negative first value).
func samples(c cluster) [][nWindow]float64 {
	out := make([][nWindow]float64, 3)
	for i := range out {
		v, ok := c.metrics(i, windowMetrics[:])
		if !ok {
			out[i][0] = -1
			continue
		}
		copy(out[i][:], v)
	}
	return out
}

func (w *window) close(r *Report, proposals uint64) {
	secs := time.Since(w.start).Seconds()
	end := samples(w.c)
	var d [nWindow]float64
	hosts := 0
	for i := range end {
		if end[i][0] < 0 || w.at[i][0] < 0 {
			continue // not running at both ends
		}
		hosts++
		for j := range d {
			d[j] += end[i][j] - w.at[i][j]
		}
	}
	syncs, frames, msgs, heartbeats, leaderships, campaigns, liveness := d[0], d[1], d[2], d[3], d[4], d[5], d[6]
	r.LivenessChanges = d[7]
	r.Seconds = secs
	r.Proposals = proposals
	r.ProposalsPerSec = float64(proposals) / secs
	if hosts > 0 {
		r.FsyncsPerSecHost = syncs / secs / float64(hosts)
		if syncs > 0 {
			r.ProposalsPerSync = float64(proposals) / (syncs / float64(hosts))
		}
	}
	r.FramesPerSec = frames / secs
	if frames > 0 {
		r.MsgsPerFrame = msgs / frames
	}
	r.HeartbeatsPerSec = heartbeats / secs
	r.WireRecordsPerSec = (msgs + liveness) / secs
	r.CPUCores = (w.c.cpu() - w.cpu).Seconds() / secs
	if proposals > 0 {
		p := float64(proposals)
		r.CPUMicrosPerProposal = (w.c.cpu() - w.cpu).Seconds() * 1e6 / p
		r.WALBytesPerProposal = (d[8] + d[9]) / p
		r.FlushedBytesPerProposal = d[10] / p
		r.CompactedBytesPerProposal = d[11] / p
	}
	r.LeaderChanges = leaderships
	r.Campaigns = campaigns
	var waits buckets
	endWaits, ok := syncSamples(w.c)
	for i := range endWaits {
		if ok[i] && w.syncsOK[i] && end[i][0] >= 0 && w.at[i][0] >= 0 {
			waits.merge(endWaits[i].since(w.syncs[i]))
		}
	}
	r.SyncP50Ms, r.SyncP99Ms = millis(waits.quantile(0.5)), millis(waits.quantile(0.99))
}

// load is a set of closed-loop proposers, each on one group, proposing to
// the group's leader as last heard.
type load struct {
	c       cluster
	groups  int
	data    *payload
	leaders []atomic.Uint64
	measure atomic.Bool
	acked   atomic.Uint64
	second  atomic.Uint64 // acknowledged since the last progress line
	mu      sync.Mutex
	h       Histogram
	errors  map[string]uint64
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

func startLoad(ctx context.Context, c cluster, groups, proposers, size int) *load {
	l := &load{c: c, groups: groups, leaders: make([]atomic.Uint64, groups+1), errors: map[string]uint64{}}
	l.data = newPayload(size)
	leaders, _ := c.leaders(groups)
	for g, n := range leaders {
		l.leaders[g].Store(n)
	}
	ctx, l.cancel = context.WithCancel(ctx)
	for p := range proposers {
		l.wg.Add(1)
		go l.propose(ctx, uint64(p%groups+1))
	}
	return l
}

func (l *load) propose(ctx context.Context, g uint64) {
	defer l.wg.Done()
	var h Histogram
	errs := map[string]uint64{}
	defer func() {
		l.mu.Lock()
		l.h.Merge(&h)
		for k, v := range errs {
			l.errors[k] += v
		}
		l.mu.Unlock()
	}()
	var nl *multiraft.NotLeaderError // out of the loop: errors.As would allocate it every proposal
	var busy *multiraft.BusyError
	var bo retry
	var start time.Time // the first attempt of the proposal in hand: latency includes its retries
	for ctx.Err() == nil {
		if start.IsZero() {
			start = time.Now()
		}
		leader := l.leaders[g].Load()
		if !l.c.up(leader) {
			l.relearn(ctx, g, &bo)
			continue
		}
		err := l.c.propose(ctx, leader, g, l.data)
		switch {
		case err == nil:
			bo.reset()
			if l.measure.Load() {
				h.Add(time.Since(start))
				l.acked.Add(1)
			}
			start = time.Time{}
			l.second.Add(1)
		case ctx.Err() != nil:
		case errors.As(err, &busy):
			// Admission control: come back when the host says.
			if l.measure.Load() {
				errs["busy"]++
			}
			_ = sleepCtx(ctx, busy.RetryAfter)
		case errors.As(err, &nl):
			if l.measure.Load() {
				errs["not_leader"]++
			}
			if hint := uint64(nl.Leader); hint != 0 && hint != leader && l.c.up(hint) && bo.cur == 0 {
				// Follow a fresh hint at once, but only once before a success:
				// two nodes naming each other mid-election must not ping-pong.
				l.leaders[g].Store(hint)
				bo.cur = minRetry / 2
				continue
			}
			l.relearn(ctx, g, &bo) // no usable hint: an election is under way
		default:
			if l.measure.Load() {
				errs[errorKind(err)]++
			}
			l.relearn(ctx, g, &bo)
		}
	}
}

// retry spaces a proposer's attempts while its group has no usable
// leader: from minRetry doubling to maxRetry, jittered, reset by a
// success. A fixed 10 ms pause made 10,000 proposers poll the hosts in a
// storm that took the CPU the elections they waited for needed (a run
// of failover-1k stalled for minutes).
type retry struct{ cur time.Duration }

const minRetry, maxRetry = 10 * time.Millisecond, 500 * time.Millisecond

// wait sleeps for the next interval; false if ctx ended.
func (r *retry) wait(ctx context.Context) bool {
	r.cur = min(max(2*r.cur, minRetry), maxRetry)
	return sleepCtx(ctx, r.cur/2+rand.N(r.cur/2+1)) == nil
}

func (r *retry) reset() { r.cur = 0 }

// relearn waits and asks the hosts who leads a group.
func (l *load) relearn(ctx context.Context, g uint64, r *retry) {
	if !r.wait(ctx) {
		return
	}
	if leader := l.c.knownLeader(g); leader != 0 {
		l.leaders[g].Store(leader)
	}
}

func errorKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{{multiraft.ErrBusy, "busy"}, {multiraft.ErrAmbiguous, "ambiguous"}, {multiraft.ErrRejected, "rejected"},
		{multiraft.ErrStopped, "stopped"}, {multiraft.ErrGroupNotFound, "not_found"}} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// startProgress prints a progress line per second until the returned
// function is called (which waits for the printer to finish).
func startProgress(ctx context.Context, out io.Writer, what string, line func() string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		progress(ctx, out, what, line)
	}()
	return func() { cancel(); <-done }
}

// progress prints a line per second until ctx ends.
func progress(ctx context.Context, out io.Writer, what string, line func() string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out)
			return
		case <-t.C:
			fmt.Fprintf(out, "\r%s [%3.0fs] %s   ", what, time.Since(start).Seconds(), line())
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func runWrite(ctx context.Context, c cluster, cfg Config, r *Report, failover bool) error {
	if err := c.createGroups(ctx, cfg.Groups); err != nil {
		return err
	}
	if err := waitLed(ctx, c, cfg.Groups); err != nil {
		return err
	}
	if err := spread(ctx, c, cfg.Groups); err != nil {
		return err
	}
	l := startLoad(ctx, c, cfg.Groups, cfg.Proposers, cfg.Payload)
	defer l.stop()
	stopProgress := startProgress(ctx, cfg.Progress, cfg.Workload, func() string {
		return fmt.Sprintf("%8d proposals/s", l.second.Swap(0))
	})
	defer stopProgress()
	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		return err
	}
	w := openWindow(c)
	l.measure.Store(true)
	profiled := profileNode(ctx, c, cfg)
	if failover {
		if err := failoverPhase(ctx, c, cfg, r, l); err != nil {
			return err
		}
	} else if err := sleepCtx(ctx, cfg.Duration); err != nil {
		return err
	}
	l.measure.Store(false)
	w.close(r, l.acked.Load())
	if err := <-profiled; err != nil {
		return err
	}
	l.stop()
	r.P50Ms, r.P99Ms, r.P999Ms = ms(l.h.Quantile(0.5)), ms(l.h.Quantile(0.99)), ms(l.h.Quantile(0.999))
	r.Errors = l.errors
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// failoverPhase runs half the window, stops node 3, and measures how long
// its groups go without a leader and how long throughput takes to come
// back to 60% of what two hosts sustain.
func failoverPhase(ctx context.Context, c cluster, cfg Config, r *Report, l *load) error {
	if err := sleepCtx(ctx, cfg.Duration/2); err != nil {
		return err
	}
	orphans := ledBy(c, cfg.Groups, 3)
	var buckets []uint64 // acknowledged per 100 ms after the kill
	before := l.acked.Load()
	killed := time.Now()
	if err := c.stop(2); err != nil {
		return err
	}
	// How long until every group node 3 led has a new serving leader:
	// watched apart from the throughput.
	electedCh := watchElections(ctx, c, cfg.Groups, orphans, killed)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(killed) < cfg.Duration/2 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		now := l.acked.Load()
		buckets = append(buckets, now-before)
		before = now
	}
	elected := <-electedCh
	electionTimeout := c.electionTimeout()
	r.FailoverTimeouts = -1 // not within the window
	if elected > 0 {
		r.FailoverTimeouts = elected.Seconds() / electionTimeout.Seconds()
	}
	// Two-host steady state: the last 30% of the window after the kill.
	tail := buckets[len(buckets)*7/10:]
	var steady float64
	for _, b := range tail {
		steady += float64(b)
	}
	steady /= float64(max(len(tail), 1))
	r.RecoverySeconds = -1
	for i := 10; i <= len(buckets); i++ { // a 1 s moving average
		var sum float64
		for _, b := range buckets[i-10 : i] {
			sum += float64(b)
		}
		if sum/10 >= 0.6*steady {
			r.RecoverySeconds = float64(i) / 10
			break
		}
	}
	return nil
}

// ledBy returns the groups the node leads.
func ledBy(c cluster, groups int, node uint64) []int {
	leaders, _ := c.leaders(groups)
	var led []int
	for g := 1; g <= groups; g++ {
		if leaders[g] == node {
			led = append(led, g)
		}
	}
	return led
}

// servedClock is a cluster whose hosts timestamp each group's new serving
// leader as it starts to serve (the in-process cluster): a failover is
// timed from those stamps rather than from when a poll saw the leaders (the
// poll shares the cores with 10,000 proposers, and its lag is its own).
type servedClock interface {
	// servedAt is when a leader of group g last started to serve.
	servedAt(g int) time.Time
}

// watchElections reports how long after killed every orphan group had a
// serving leader again (0: not within 30 s).
func watchElections(ctx context.Context, c cluster, groups int, orphans []int, killed time.Time) <-chan time.Duration {
	electedCh := make(chan time.Duration, 1)
	go func() {
		if sc, ok := c.(servedClock); ok {
			for time.Since(killed) < 30*time.Second && ctx.Err() == nil {
				var last time.Time
				for _, g := range orphans {
					t := sc.servedAt(g)
					if !t.After(killed) {
						last = time.Time{}
						break
					}
					if t.After(last) {
						last = t
					}
				}
				if !last.IsZero() {
					electedCh <- last.Sub(killed)
					return
				}
				_ = sleepCtx(ctx, 20*time.Millisecond)
			}
			electedCh <- 0
			return
		}
		for time.Since(killed) < 30*time.Second && ctx.Err() == nil {
			leaders, _ := c.leaders(groups)
			all := true
			for _, g := range orphans {
				if leaders[g] == 0 {
					all = false
					break
				}
			}
			if all {
				electedCh <- time.Since(killed)
				return
			}
			_ = sleepCtx(ctx, 20*time.Millisecond)
		}
		electedCh <- 0
	}()
	return electedCh
}

// runFailoverIdle is idle-10k, then node 3 is killed: how many election
// timeouts until every group it led has a new leader (BENCH.md's bar: 2),
// from quiescence, where only node liveness can notice.
func runFailoverIdle(ctx context.Context, c cluster, cfg Config, r *Report) error {
	if err := runIdle(ctx, c, cfg, r); err != nil {
		return err
	}
	orphans := ledBy(c, cfg.Groups, 3)
	killed := time.Now()
	if err := c.stop(2); err != nil {
		return err
	}
	elected := <-watchElections(ctx, c, cfg.Groups, orphans, killed)
	r.FailoverTimeouts = -1
	if elected > 0 {
		r.FailoverTimeouts = elected.Seconds() / c.electionTimeout().Seconds()
	}
	return ctx.Err()
}

func runIdle(ctx context.Context, c cluster, cfg Config, r *Report) error {
	debug.FreeOSMemory()
	base := c.rss()
	start := time.Now()
	if err := c.createGroups(ctx, cfg.Groups); err != nil {
		return err
	}
	stopProgress := startProgress(ctx, cfg.Progress, cfg.Workload, func() string {
		_, led := c.leaders(cfg.Groups)
		return fmt.Sprintf("%d/%d groups led", led, cfg.Groups)
	})
	// Without quiescence a large idle cluster may never have every group
	// led at once (ticks and heartbeats saturate the cores and elections
	// churn): after two minutes the run goes on and reports how many were.
	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err := waitLed(ectx, c, cfg.Groups)
	cancel()
	stopProgress()
	_, r.LedGroups = c.leaders(cfg.Groups)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		r.ElectSeconds = time.Since(start).Seconds()
	default:
		r.ElectSeconds = -1
	}
	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		return err
	}
	w := openWindow(c)
	if err := sleepCtx(ctx, cfg.Duration); err != nil {
		return err
	}
	w.close(r, 0)
	debug.FreeOSMemory()
	r.RSSPerReplica = float64(c.rss()-base) / float64(3*cfg.Groups)
	return nil
}

func runRestart(ctx context.Context, c cluster, cfg Config, r *Report) error {
	if err := c.createGroups(ctx, cfg.Groups); err != nil {
		return err
	}
	if err := waitLed(ctx, c, cfg.Groups); err != nil {
		return err
	}
	// Fill: each group gets cfg.Entries entries (one proposal at a time
	// per group, so one entry each).
	data := newPayload(cfg.Payload)
	var filled atomic.Uint64
	stopProgress := startProgress(ctx, cfg.Progress, cfg.Workload, func() string {
		return fmt.Sprintf("filling: %d/%d entries", filled.Load(), cfg.Groups*cfg.Entries)
	})
	err := proposeAll(ctx, c, cfg.Groups, cfg.Proposers, cfg.Entries, data, &filled)
	stopProgress()
	if err != nil {
		return err
	}
	if err := c.stop(2); err != nil {
		return err
	}
	start := time.Now()
	if err := c.restart(2); err != nil {
		return err
	}
	// Served again: every group takes a proposal.
	var served atomic.Uint64
	stopProgress = startProgress(ctx, cfg.Progress, cfg.Workload, func() string {
		_, led := c.leaders(cfg.Groups)
		return fmt.Sprintf("after restart: %d/%d groups led, %d served", led, cfg.Groups, served.Load())
	})
	err = proposeAll(ctx, c, cfg.Groups, cfg.Proposers, 1, data, &served)
	stopProgress()
	r.RestartSeconds = time.Since(start).Seconds()
	r.Proposals = uint64(cfg.Groups * cfg.Entries)
	return err
}

// proposeAll makes n proposals to each of groups 1..groups, at most
// concurrency groups at a time.
func proposeAll(ctx context.Context, c cluster, groups, concurrency, n int, data *payload, done *atomic.Uint64) error {
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for g := 1; g <= groups; g++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := proposeN(ctx, c, uint64(g), n, data, done); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return err
}

// proposeN makes n proposals to a group, one after the other, through
// whoever leads it.
func proposeN(ctx context.Context, c cluster, g uint64, n int, data *payload, done *atomic.Uint64) error {
	var leader uint64
	var nl *multiraft.NotLeaderError
	var bo retry
	for i := 0; i < n; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !c.up(leader) {
			leader = c.knownLeader(g)
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		err := c.propose(ctx, leader, g, data)
		switch {
		case err == nil:
			i++
			done.Add(1)
			bo.reset()
		case errors.As(err, &nl):
			if (uint64(nl.Leader) == leader || !c.up(uint64(nl.Leader)) || bo.cur > 0) && !bo.wait(ctx) {
				// No usable hint (an election is under way), or the last
				// hint did not help either: wait rather than spin.
				return ctx.Err()
			}
			if bo.cur == 0 {
				bo.cur = minRetry / 2
			}
			leader = uint64(nl.Leader)
		case errors.Is(err, multiraft.ErrBusy), errors.Is(err, multiraft.ErrAmbiguous), errors.Is(err, multiraft.ErrStopped):
			leader = 0
		default:
			return err
		}
	}
	return nil
}

// Table renders reports as a text table.
func Table(w io.Writer, reports []*Report) {
	TableHeader(w)
	for _, r := range reports {
		TableRow(w, r)
	}
}

// TableHeader writes the table's header line.
func TableHeader(w io.Writer) {
	fmt.Fprintf(w, "%-13s %7s %8s %11s %8s %8s %8s %10s %9s %9s %9s %9s %10s %6s %8s %9s %9s %7s %s\n",
		"workload", "groups", "props", "proposals/s", "p50 ms", "p99 ms", "p99.9 ms", "fsync/s/h", "prop/sync",
		"frames/s", "msg/frame", "hb msg/s", "wire rec/s", "cpu", "us/prop", "disk B/p", "peak RSS", "ldr chg", "other")
}

// TableRow writes one report's line.
func TableRow(w io.Writer, r *Report) {
	other := ""
	switch {
	case r.Workload == "failover-idle-10k":
		other = fmt.Sprintf("elected in %.1fs; new leaders %.2f election timeouts after the kill", r.ElectSeconds, r.FailoverTimeouts)
	case r.ElectSeconds > 0:
		other = fmt.Sprintf("elected in %.1fs, %.0f B RSS/replica", r.ElectSeconds, r.RSSPerReplica)
	case r.ElectSeconds < 0:
		other = fmt.Sprintf("only %d of %d groups led at once after 2 min; %.0f B RSS/replica", r.LedGroups, r.Groups, r.RSSPerReplica)
	case r.RestartSeconds > 0:
		other = fmt.Sprintf("served again %.2fs after start", r.RestartSeconds)
	case r.Workload == "catchup-1g":
		other = fmt.Sprintf("caught up %.0f MiB in %.1fs (%.0f MiB/s), receiver peak RSS +%.0f MiB, %.0f snapshots",
			float64(r.CatchupBytes)/(1<<20), r.CatchupSeconds, r.CatchupBytesPerSec/(1<<20), float64(r.ReceiverRSSGrowth)/(1<<20), r.CatchupSnapshots)
	case r.Workload == "failover-1k":
		other = fmt.Sprintf("new leaders in %.2f election timeouts, 60%% throughput after %.1fs", r.FailoverTimeouts, r.RecoverySeconds)
	}
	if r.SyncP50Ms != 0 && other == "" {
		other = fmt.Sprintf("sync p50 %s p99 %s ms", syncFigure(r.SyncP50Ms), syncFigure(r.SyncP99Ms))
	}
	if len(r.Errors) > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			other += fmt.Sprintf(" %s=%d", k, r.Errors[k])
		}
	}
	name := r.Workload
	if r.SM == "noop" {
		name += "/noop"
	}
	if r.Quick {
		name += "*"
	}
	if r.Runs > 1 {
		other = fmt.Sprintf("median of %d;%s", r.Runs, other)
	}
	disk := r.WALBytesPerProposal + r.FlushedBytesPerProposal + r.CompactedBytesPerProposal
	fmt.Fprintf(w, "%-13s %7d %8d %11.0f %8.2f %8.2f %8.2f %10.0f %9.1f %9.0f %9.1f %9.0f %10.0f %6.2f %8.1f %9.0f %8.0fM %7.0f %s\n",
		name, r.Groups, r.Proposers, r.ProposalsPerSec, r.P50Ms, r.P99Ms, r.P999Ms, r.FsyncsPerSecHost,
		r.ProposalsPerSync, r.FramesPerSec, r.MsgsPerFrame, r.HeartbeatsPerSec, r.WireRecordsPerSec, r.CPUCores,
		r.CPUMicrosPerProposal, disk, float64(r.PeakRSS)/(1<<20), r.LeaderChanges, other)
}

// syncFigure prints a sync quantile in milliseconds (-1: beyond range).
func syncFigure(ms float64) string {
	if ms < 0 {
		return "> 26000"
	}
	return fmt.Sprintf("%.2f", ms)
}
