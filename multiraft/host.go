package multiraft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"go.etcd.io/raft/v3"

	"github.com/flotilla-io/flotilla/metrics"
	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// Host runs every Raft group of one node over one store, one scheduler
// and one transport.
type Host struct {
	cfg        Config
	log        *slog.Logger
	m          *metrics.Host
	store      *store.Store
	sched      *scheduler.Scheduler
	trans      transport.Transport
	raftLogger raft.Logger
	// proposed counts Propose calls by result, resolved once: the
	// labelled lookup costs a hash and a lock per call.
	proposed map[string]prometheus.Counter
	// readsWaiting and transfersWaiting count the requests of the kind
	// taken and not yet answered, resolved once.
	readsWaiting, transfersWaiting prometheus.Gauge

	groups struct {
		sync.RWMutex
		m map[uint64]*group
	}
	space         *spaceAlarm
	live          *liveness
	unregister    func() // the host's metrics from Config.Registerer; nil if none
	proposalBytes atomic.Int64
	inFlight      atomic.Int64 // proposals admitted and not yet answered
	inboxBytes    atomic.Int64 // data queued in inboxes and append backlogs
	stagingBytes  atomic.Int64 // reserved for staged snapshots (SnapshotStagingBytes)
	controlBytes  atomic.Int64 // the failure detector's messages queued in inboxes
	nextProposal  atomic.Uint64
	bootNonce     uint64 // distinguishes this incarnation's read contexts
	nextRead      atomic.Uint64

	failure struct {
		once sync.Once
		err  atomic.Pointer[error]
	}
	closeOnce sync.Once
	closed    atomic.Bool

	// bg counts the goroutines a host starts besides its own (snapshot
	// writers, persist.go), which Close waits for; writers bounds the
	// snapshot writes running at once, and queues the groups waiting.
	bg      sync.WaitGroup
	writers struct {
		sync.Mutex
		busy    int
		waiting []*group
	}

	// subs are the event subscriptions; list is what emit reads.
	subs struct {
		sync.Mutex
		m    map[*Subscription]struct{}
		list atomic.Pointer[[]*Subscription]
	}
}

// NewHost opens the store in cfg.Dir, loads every group found there, and
// starts the scheduler and the transport.
func NewHost(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), m: metrics.NewHost(), trans: cfg.Transport}
	storeMetrics, schedMetrics := metrics.NewStore(), metrics.NewScheduler()
	// Every series carries the host's node ID, so hosts of one process
	// can share a registry; the transport registers its own at Start.
	var reg prometheus.Registerer
	if cfg.Registerer != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"node": strconv.FormatUint(uint64(cfg.NodeID), 10)}, cfg.Registerer)
		unregister, err := metrics.Register(reg, h.m, storeMetrics, schedMetrics)
		switch {
		case err != nil && strings.Contains(err.Error(), `label name "node"`):
			return nil, fmt.Errorf("%w: Config.Registerer already labels its series node=...: pass the registry "+
				"itself, the host adds that label: %w", ErrInvalid, err)
		case err != nil:
			return nil, fmt.Errorf("%w: Config.Registerer: %w (is node %d registered there twice?)", ErrInvalid, err, cfg.NodeID)
		}
		h.unregister = unregister
	}
	opened := false
	defer func() {
		if !opened && h.unregister != nil {
			h.unregister()
		}
	}()
	h.proposed = make(map[string]prometheus.Counter)
	for _, result := range []string{"ok", "not_leader", "busy", "no_space", "rejected", "ambiguous", "error"} {
		h.proposed[result] = h.m.Proposals.WithLabelValues(result)
	}
	for _, cause := range []string{"request", "message", "leader_down", "peer_up", "quorum", "raft", "asked"} {
		h.m.Wakeups.WithLabelValues(cause) // every cause's series exists from the start
	}
	h.readsWaiting, h.transfersWaiting = h.m.RequestsWaiting.WithLabelValues("read"), h.m.RequestsWaiting.WithLabelValues("transfer")
	h.groups.m = make(map[uint64]*group)
	h.raftLogger = &raftLogger{log: h.log.With("component", "raft")}
	h.nextProposal.Store(rand.Uint64() >> 1)
	h.bootNonce = rand.Uint64()

	sc := store.DefaultConfig(cfg.Dir)
	sc.FS = cfg.FS
	sc.ClusterID, sc.NodeID = cfg.ClusterID, uint64(cfg.NodeID)
	sc.Logger = h.log // the store's and Pebble's lines name the node too
	sc.Metrics = storeMetrics
	sc.EntryCacheBytes = cfg.EntryCacheBytes
	sc.MaxQueueBytes = cfg.LogQueueBytes
	// An item larger than a batch gets a batch of its own: a batch never
	// needs to be larger than the queue.
	sc.MaxBatchBytes = int(min(int64(sc.MaxBatchBytes), cfg.LogQueueBytes))
	if n := cfg.testing.logQueueItems; n > 0 {
		sc.MaxQueueItems, sc.MaxBatchItems = n, min(sc.MaxBatchItems, n)
	}
	sc.MemTableSize = cfg.MemTableSize
	sc.DiskStallThreshold = cfg.DiskStallThreshold
	sc.OnFailure = func(err error) { h.fail(err) }
	h.space = newSpaceAlarm(h)
	h.live = newLiveness(h)
	if h.space.enabled() {
		sc.OnDiskFull = h.space.noteENOSPC
	}
	st, err := store.Open(sc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", storeSentinel(err), err)
	}
	h.store = st
	h.sched, err = scheduler.New(scheduler.Config{
		Workers: cfg.Workers, TickInterval: cfg.TickInterval, Clock: cfg.Clock,
		Metrics: schedMetrics,
		// Heartbeats wait in the transport for the next tick, when they
		// go for all groups at once: one frame per peer per tick (with a
		// liveness record to a peer nothing else went to). Then the
		// liveness view moves on, before any group ticks.
		OnTick: func() {
			if h.Err() != nil {
				// A failed host says nothing more, liveness records
				// included: its peers must see it dead, and elect.
				return
			}
			cfg.Transport.Flush()
			h.live.tick()
		},
	}, h.ports())
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	for _, id := range st.Groups() {
		gs, _ := st.Group(id)
		if err := h.addGroup(gs, nil); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("%w: %w", ErrDataDir, err)
		}
	}
	if err := h.trans.Start(h.ports(), transport.Env{NodeID: uint64(cfg.NodeID), Logger: h.log, Registerer: reg, Incarnation: h.bootNonce | 1}); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("%w: Config.Transport: %w", ErrInvalid, err)
	}
	h.sched.Start()
	h.space.start()
	opened = true
	return h, nil
}

// storeSentinel is the host's sentinel for a store error.
func storeSentinel(err error) error {
	switch {
	case errors.Is(err, store.ErrBusy):
		return ErrBusy
	case errors.Is(err, store.ErrFailed), errors.Is(err, store.ErrClosed):
		return ErrStopped
	case errors.Is(err, store.ErrGroupNotFound), errors.Is(err, store.ErrGroupRemoved):
		return ErrGroupNotFound
	case errors.Is(err, store.ErrGroupExists):
		return ErrGroupExists
	case errors.Is(err, store.ErrInvalid):
		return ErrInvalid
	default: // a data directory that is locked, another node's, corrupt or unreadable
		return ErrDataDir
	}
}

// NodeID returns the host's node ID.
func (h *Host) NodeID() NodeID { return h.cfg.NodeID }

// addGroup makes a stored replica a hosted group. seed, for a joining
// replica, is its group's replicas as the leader that made it join knows
// them (admit.go).
func (h *Host) addGroup(st *store.GroupStorage, seed map[uint64]uint64) error {
	g, err := h.newGroup(st)
	if err != nil {
		return err
	}
	if len(g.replicas) == 0 && len(seed) > 0 {
		g.learned = make(map[uint64]uint64, min(len(seed), maxLearned))
		for r, n := range seed {
			if len(g.learned) < maxLearned && r != 0 && n != 0 {
				g.learned[r] = n
				g.seededBelow = max(g.seededBelow, r+1)
			}
		}
	}
	h.groups.Lock()
	h.groups.m[g.id] = g
	h.groups.Unlock()
	h.m.Groups.Inc()
	h.sched.SetTicking(g.id, true)
	if g.leader == 0 {
		g.urgent = true
		h.sched.SetUrgent(g.id, true)
	}
	return nil
}

func (h *Host) group(groupID GroupID) *group {
	h.groups.RLock()
	defer h.groups.RUnlock()
	return h.groups.m[uint64(groupID)]
}

// usable returns why the host takes no new work, if it does not.
func (h *Host) usable() error {
	if p := h.failure.err.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrStopped, *p)
	}
	if h.closed.Load() {
		return ErrStopped
	}
	return nil
}

// fail stops the host on a fatal error (fail-stop): no group is processed
// any more and the embedder is told once.
func (h *Host) fail(err error) {
	h.failure.once.Do(func() {
		h.failure.err.Store(&err)
		// Every group's worker fails what waits on it (the worker owns it).
		h.groups.RLock()
		for _, g := range h.groups.m {
			g.serving.Store(false)
			h.sched.Enqueue(g.id, scheduler.Requests)
		}
		h.groups.RUnlock()
		h.log.Error("host failed", "err", err)
		h.cfg.Events.HostFailed(err)
		h.emit(Event{Kind: EventHostFailed, Err: err})
	})
}

// Err returns the error the host failed with, or nil.
func (h *Host) Err() error {
	if p := h.failure.err.Load(); p != nil {
		return *p
	}
	return nil
}

// CreateGroup creates this host's replica of a new group whose founding
// members are the given nodes (this one among them). Every founding member
// must be created with the same member list: replica IDs 1..n go to the
// nodes in ascending order.
func (h *Host) CreateGroup(groupID GroupID, members []NodeID) error {
	if err := h.usable(); err != nil {
		return err
	}
	if err := h.space.refuse(); err != nil {
		return err
	}
	nodes := slices.Clone(members)
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	replicas := make(map[uint64]uint64, len(nodes))
	var self uint64
	for i, n := range nodes {
		if n == 0 {
			return fmt.Errorf("%w: node ID 0 among the members", ErrInvalid)
		}
		replicas[uint64(i+1)] = uint64(n)
		if n == h.cfg.NodeID {
			self = uint64(i + 1)
		}
	}
	if self == 0 {
		return fmt.Errorf("%w: node %d is not among the members %v", ErrInvalid, h.cfg.NodeID, members)
	}
	return h.createReplica(groupID, self, replicas, nil)
}

// JoinGroup creates an empty replica of an existing group on this host,
// with the replica ID the group's leader allocated for it; it waits to be
// added by a membership change and caught up.
//
// Until its snapshot names the group's replicas, it takes a replica's
// messages from the first node it hears that replica from (JoinGroupOn,
// from a host of the group, tells it who hosts which instead).
func (h *Host) JoinGroup(groupID GroupID, replicaID ReplicaID) error {
	return h.joinGroup(groupID, replicaID, nil)
}

func (h *Host) joinGroup(groupID GroupID, replicaID ReplicaID, seed map[uint64]uint64) error {
	if err := h.usable(); err != nil {
		return err
	}
	if err := h.space.refuse(); err != nil {
		return err
	}
	return h.createReplica(groupID, uint64(replicaID), nil, seed)
}

// createReplica creates a founding replica (replicas: the group's founding
// configuration) or a joining one (replicas nil, seed: who hosts which
// replica, if the caller knows).
func (h *Host) createReplica(groupID GroupID, replicaID uint64, replicas, seed map[uint64]uint64) error {
	switch {
	case groupID == 0:
		return fmt.Errorf("%w: group ID 0 is reserved; groups are numbered from 1", ErrInvalid)
	case replicaID == 0:
		return fmt.Errorf("%w: replica ID 0 for group %d; replica IDs are numbered from 1 (the leader's ChangeMembership allots them)", ErrInvalid, groupID)
	}
	if h.group(groupID) != nil {
		return fmt.Errorf("%w: group %d", ErrGroupExists, groupID)
	}
	st, err := h.store.CreateGroup(uint64(groupID), replicaID, replicas)
	switch {
	case errors.Is(err, store.ErrGroupExists):
		return fmt.Errorf("%w: group %d", ErrGroupExists, groupID)
	case errors.Is(err, store.ErrReplicaTooOld):
		next, _ := h.store.Tombstone(uint64(groupID))
		return fmt.Errorf("%w: group %d had a replica here that was removed, and replica IDs are never reused "+
			"(replica %d asked, %d or above allowed): add a new replica through the group's leader "+
			"(ChangeMembership with AddLearner or AddVoter for this node) and JoinGroup with the replica ID it returns: %w",
			ErrInvalid, groupID, replicaID, next, err)
	case err != nil:
		return fmt.Errorf("%w: create group %d: %w", storeSentinel(err), groupID, err)
	}
	if err := h.addGroup(st, seed); err != nil {
		return fmt.Errorf("%w: %w", ErrDataDir, err)
	}
	h.cfg.Events.GroupCreated(groupID)
	h.emit(Event{Kind: EventGroupCreated, GroupID: groupID})
	return nil
}

// SetSystemGroup marks a group as a system group (or not): its work is
// taken before every other group's, from the scheduler's priority lane.
func (h *Host) SetSystemGroup(groupID GroupID, system bool) error {
	if h.group(groupID) == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	h.sched.SetPriority(uint64(groupID), system)
	return nil
}

// Groups returns the IDs of the hosted groups, in no order.
func (h *Host) Groups() []GroupID {
	h.groups.RLock()
	defer h.groups.RUnlock()
	ids := make([]GroupID, 0, len(h.groups.m))
	for id := range h.groups.m {
		ids = append(ids, GroupID(id))
	}
	return ids
}

// Status returns a group's status as of its last processing.
func (h *Host) Status(groupID GroupID) (Status, error) {
	g := h.group(groupID)
	if g == nil {
		return Status{}, fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	st := *g.status.Load()
	// What is published is shared between statuses: the caller gets its own.
	st.Replicas, st.Progress, st.Learners = maps.Clone(st.Replicas), maps.Clone(st.Progress), slices.Clone(st.Learners)
	if g.broken.Load() {
		st.Failed, st.Serving = true, false
	}
	if h.usable() != nil {
		st.Serving = false // a stopped host serves nothing, whatever its last status said
	}
	return st, nil
}

// Propose proposes data to a group and returns once it is committed and
// applied on this host, with the state machine's result and the command's
// log position. On a host that does not lead the group it fails at once
// with a *NotLeaderError naming the leader. See the errors for outcomes.
func (h *Host) Propose(ctx context.Context, groupID GroupID, data []byte) (Result, error) {
	res, err := h.propose(ctx, groupID, data)
	h.proposed[resultLabel(err)].Inc()
	return res, err
}

func (h *Host) propose(ctx context.Context, groupID GroupID, data []byte) (Result, error) {
	if err := h.usable(); err != nil {
		return Result{}, err
	}
	if len(data) > h.cfg.MaxProposalBytes {
		return Result{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), h.cfg.MaxProposalBytes)
	}
	g := h.group(groupID)
	if g == nil {
		return Result{}, fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if !g.serving.Load() {
		if err := g.closed(); err != nil {
			return Result{}, err
		}
		return Result{}, g.notLeader()
	}
	// A full disk refuses on the leader: a follower points the caller to
	// it first.
	if err := h.space.refuse(); err != nil {
		return Result{}, err
	}
	// Admission control: a host holds a bounded number of proposals, so
	// that under any load it stays well inside its election timeout.
	if n := h.inFlight.Add(1); n > int64(h.cfg.MaxProposalsInFlight) {
		h.inFlight.Add(-1)
		h.m.AdmissionRefused.Inc()
		return Result{}, h.busy("node %d holds %d proposals in flight, its bound", h.cfg.NodeID, h.cfg.MaxProposalsInFlight)
	}
	size := int64(len(data) + 64)
	if h.proposalBytes.Add(size) > h.cfg.ProposalBudgetBytes {
		h.proposalBytes.Add(-size)
		h.inFlight.Add(-1)
		h.m.AdmissionRefused.Inc()
		return Result{}, h.busy("node %d's proposal budget of %d bytes is in use", h.cfg.NodeID, h.cfg.ProposalBudgetBytes)
	}
	h.m.ProposalBytes.Add(float64(size))
	h.m.ProposalsInFlight.Inc()
	// The bytes stay charged until the proposal is finished, even if the
	// caller stops waiting first.
	p := &proposal{id: h.nextProposal.Add(1), data: data, start: time.Now(), done: make(chan proposalResult, 1), h: h, charged: size}
	g.mu.Lock()
	if err := g.admitLocked(len(g.mu.proposals), "proposal"); err != nil {
		g.mu.Unlock()
		p.release()
		return Result{}, err
	}
	// Only the proposal that finds the queue empty raises the group's flag:
	// a worker always drains the whole queue, and the flag stays up until
	// it does, so the others would only contend on the scheduler's lock.
	first := len(g.mu.proposals) == 0
	g.mu.proposals = append(g.mu.proposals, p)
	g.mu.Unlock()
	if first {
		h.sched.Enqueue(g.id, scheduler.Requests)
	}
	select {
	case r := <-p.done:
		if r.err == nil {
			h.m.ProposeDuration.Observe(time.Since(p.start).Seconds())
		}
		return r.Result, r.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%w: %w", ErrAmbiguous, ctx.Err())
	}
}

func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotLeader):
		return "not_leader"
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, ErrNoSpace):
		return "no_space"
	case errors.Is(err, ErrRejected):
		return "rejected"
	case errors.Is(err, ErrAmbiguous):
		return "ambiguous"
	default:
		return "error"
	}
}

// Close stops taking work, lets workers finish the groups they are
// processing, fails what is still pending with ErrStopped, and closes the
// transport and the store.
func (h *Host) Close() error {
	var err error
	h.closeOnce.Do(func() {
		h.closed.Store(true)
		defer h.closeSubscriptions() // after the last event: the workers are stopped
		h.space.close()
		h.sched.Close()
		err = h.trans.Close()
		h.groups.RLock()
		for _, g := range h.groups.m {
			g.stop(ErrStopped)
		}
		h.groups.RUnlock()
		h.bg.Wait() // a snapshot writer still running finds its group refusing
		cerr := h.store.Close()
		if h.Err() != nil && cerr != nil {
			// A failed store may not close cleanly; the failure was reported.
			h.log.Warn("closing the store after a failure", "err", cerr)
			cerr = nil
		}
		if err == nil {
			err = cerr
		}
		if h.unregister != nil {
			h.unregister()
		}
	})
	return err
}
