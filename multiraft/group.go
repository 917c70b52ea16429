package multiraft

import (
	"fmt"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// group is one Raft group hosted here.
//
// Its RawNode and everything under "owned by the worker" are touched only
// by the scheduler worker processing the group (the scheduler guarantees
// one at a time), so they need no lock. Other goroutines (proposers, the
// transport, the log writer's completions) hand work over through mu and
// raise a scheduler flag.
type group struct {
	h  *Host
	id uint64
	st *store.GroupStorage
	sm machine

	mu struct {
		sync.Mutex
		inbox        []inbound
		inboxBox     *[]inbound // inbox's box from inboxPool, nil if none
		inboxBytes   int64      // of data, charged to the host's inbox budget
		controlBytes int64      // of control messages, charged to the control budget
		proposals    []*proposal
		storage      []*pb.Message // durable appends' local responses, in order
		unreachable  map[uint64]struct{}
		reads        []*readRequest
		transfers    []*transferRequest
		confChanges  []*confChangeRequest
		snapReports  []snapReport
		snapRequests []*snapRequest             // Host.Snapshot calls
		snapCount    int                        // Snapshot calls not yet answered (queued, or waiting on the worker)
		snapWritten  []snapWritten              // Snapshotter writes done off the worker
		staged       map[uint64]*stagedSnapshot // received snapshots by index, waiting for raft
		remove       []chan error               // RemoveGroup requests
		// readCount and transferCount count the reads and transfers not
		// yet answered, queued here or handed to the worker: both are
		// bounded like the queues.
		readCount, transferCount int
		// refuse, once set, refuses new requests and inbound traffic: no
		// worker will step the group again (it failed, was removed, or the
		// host stopped). refuseRemoval refuses removals too (a failed
		// group can still be removed).
		refuse, refuseRemoval error
	}

	// Published by the worker for other goroutines.
	leaderNode atomic.Uint64 // node ID of the leader, 0 if unknown
	quiet      atomic.Bool   // quiesced (see quiesce.go)
	// nudged is set by a liveness transition that concerns the group,
	// before it is queued: its next pass looks at liveness.
	nudged  atomic.Uint32 // nudgeDown | nudgeUp
	serving atomic.Bool   // this host leads and has applied an entry of its term
	broken  atomic.Bool   // the group failed alone (failed is set)
	status  atomic.Pointer[Status]
	opts    atomic.Pointer[GroupOptions] // SetGroupOptions; nil: the host's
	// slotFreed: a snapshot writer slot this group queued for freed
	// (persist.go; set under Host.writers); writerQueued (under
	// Host.writers) says it is queued.
	slotFreed    atomic.Bool
	writerQueued bool

	// Owned by the worker.
	rn            *raft.RawNode
	replicaID     uint64
	replicas      map[uint64]uint64 // replica ID -> node ID
	applied       uint64
	appliedTerm   uint64
	confState     *pb.ConfState // as of applied
	nextReplicaID uint64
	durable       uint64 // applied index of the last durable snapshot
	// snapInFlight: a Snapshotter's write runs off the worker; restoreGen
	// counts restores from the leader's snapshots (a write prepared before
	// one is dropped); snapWaiters are the Snapshot calls it will answer.
	snapInFlight bool
	restoreGen   uint64
	snapWaiters  []*snapRequest
	keptFrom     uint64 // the state machine's RetainFrom at the last truncation
	truncQueued  uint64 // the last truncation index queued by truncateKept
	truncRetry   bool   // truncateKept was refused by a busy log writer: retry each pass
	// readable is the last entry a LogReader may read: handed to the
	// state machine, so committed and durable here.
	readable atomic.Uint64
	term     uint64
	commit   uint64         // as of the last HardState
	role     raft.StateType // as of the last SoftState
	// replicasVersion changes with g.replicas, so Status copies the map
	// only when it changed; published is what the last Status showed.
	replicasVersion uint64
	published       statusKey
	leader          uint64 // replica ID of the leader, 0 if none
	pending         map[uint64]*proposal
	byIndex         map[uint64][]*proposal // proposals whose entry is in the log, by index
	// acks holds applied proposals whose entry is not yet durable here, in
	// index order: a client ack never leaves before the local fsync.
	acks          []parkedAck
	appendBacklog []*pb.Message            // MsgStorageAppend refused by a busy log writer
	reads         map[string]*readRequest  // issued to raft, by context
	transfers     []*transferRequest       // waiting to see their target lead
	ticks         uint64                   // ticks applied, for read retries
	sending       map[uint64]uint64        // replica -> index of a snapshot in flight to it
	snapFails     map[uint64]*snapFailures // replica -> snapshots to it that failed in a row (leader)
	// learned maps replicas to nodes from the traffic they send, for
	// replicas the applied configuration does not name yet: a joining
	// replica must answer its leader before its snapshot tells it who is
	// who.
	learned map[uint64]uint64
	// seededBelow is one past the highest replica ID a joining replica was
	// told of (admit.go); 0 if told nothing.
	seededBelow uint64
	// staged holds received snapshots until raft takes them (the append
	// carrying one is installed, at once or from the backlog) or a pass
	// ends without raft taking them.
	staged map[uint64]*stagedSnapshot
	last   uint64 // raft's last log index, as of the last Ready
	// removalNotices lists the members whose removal notices this
	// replica holds (gc.go).
	removalNotices []uint64
	// lastLow is a lower bound of raft's last log index within a pass
	// (admit.go): last, lowered by appends that may cut the log's tail.
	lastLow uint64
	// Quiescence (quiesce.go): quiesced is the worker's own state;
	// lagging lists the nodes whose replicas lagged when this leader
	// quiesced; quiesceAsked is a quiesce heartbeat this pass stepped;
	// campaignAt is the tick at which a follower whose leader's node
	// stopped being live campaigns (0: none).
	urgent       bool // in the scheduler's control lane (no leader)
	quiesced     bool
	lagging      []uint64
	quiesceAsked *quiesceCheck
	campaignAt   uint64
	campaigns    int    // campaigns maybeCampaign started since the leader was lost
	leaderEpoch  uint64 // restarts of the leader's node seen when it was learned
	leaderHeard  uint64 // g.ticks when a message from the leader was last stepped (or a wake-up asked it)
	fromLeader   uint64 // g.ticks when a message from the leader was last stepped (see slowElectionClock)
	// holdTicks is how many more ticks the replica's election clock stands
	// still: a replica that is not its group's preferred one at start
	// (spreadFirstElection), or one that waits for another voter to
	// replace a dead leader (checkLiveness, deferCampaign).
	holdTicks int
	removed   bool    // removed from the host; nothing more to do
	failed    error   // the group failed alone (a panic); nothing more to do
	pass      *intake // what the pass in progress took, for recoverGroup
	intake    intake  // what a pass takes, reused
}

func (h *Host) newGroup(st *store.GroupStorage) (*group, error) {
	// The group's maps are made on first use: an idle group needs none.
	g := &group{h: h, id: st.ID(), st: st}
	g.sm = h.newMachine(g)
	applied := st.Applied()
	g.replicaID = st.ReplicaID()
	g.replicas = applied.Replicas
	if g.replicas == nil {
		g.replicas = make(map[uint64]uint64)
	}
	g.applied, g.appliedTerm = applied.Index, applied.Term
	g.durable = applied.Index
	g.readable.Store(applied.Index)
	g.confState = applied.ConfState
	last, err := st.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", g.id, err)
	}
	g.last, g.lastLow = last, last
	if last > applied.Index {
		// Replicas added by changes not applied yet may speak first.
		if ents, err := st.Entries(applied.Index+1, last+1, maxLearnScanBytes); err == nil {
			g.learnReplicas(ents)
		}
	}
	g.nextReplicaID = applied.NextReplicaID
	data, err := st.LoadStateSnapshot()
	if err != nil {
		return nil, err
	}
	if data != nil {
		if err := g.sm.restore(g, data); err != nil {
			return nil, fmt.Errorf("multiraft: group %d: restore state machine: %w", g.id, err)
		}
	}
	c := h.cfg
	rn, err := newRawNode(&raft.Config{
		ID:                        g.replicaID,
		ElectionTick:              c.ElectionTicks,
		HeartbeatTick:             c.HeartbeatTicks,
		Storage:                   st,
		Applied:                   applied.Index,
		AsyncStorageWrites:        true,
		MaxSizePerMsg:             c.MaxSizePerMsg,
		MaxCommittedSizePerReady:  c.MaxCommittedSizePerReady,
		MaxUncommittedEntriesSize: c.MaxUncommittedEntriesSize,
		MaxInflightMsgs:           c.MaxInflightMsgs,
		MaxInflightBytes:          c.MaxInflightBytes,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    h.raftLogger,
	})
	if err != nil {
		return nil, fmt.Errorf("multiraft: group %d: %w", g.id, err)
	}
	g.rn = rn
	bs := rn.BasicStatus()
	g.role, g.leader, g.term, g.commit = bs.RaftState, bs.Lead, bs.GetTerm(), bs.GetCommit()
	g.publishStatus(false)
	if g.leader == 0 {
		g.spreadFirstElection()
	}
	return g, nil
}

// newRawNode builds a RawNode; raft panics on what it cannot start from
// (a configuration it refuses, a hard state its log does not cover): that
// is an error here, never the process's end.
func newRawNode(cfg *raft.Config) (rn *raft.RawNode, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("raft: %v", r)
		}
	}()
	return raft.NewRawNode(cfg)
}

// Status describes a group as this host sees it.
type Status struct {
	GroupID   GroupID
	ReplicaID ReplicaID // this host's replica
	Role      Role
	// Leader is the leader's node, 0 if unknown.
	Leader  NodeID
	Term    uint64
	Commit  uint64
	Applied uint64
	// Replicas maps the group's replicas to their nodes.
	Replicas map[ReplicaID]NodeID
	// Learners are the replicas among them that do not vote.
	Learners []ReplicaID
	// Serving is true on a leader that has applied an entry of its term.
	Serving bool
	// Progress describes each follower, as the leader tracks it (leader
	// only; refreshed once per tick).
	Progress map[ReplicaID]Progress
	// Failed is true once this host's replica failed alone (see
	// ErrGroupFailed); the other fields are as they were then.
	Failed bool

	replicasVersion uint64 // which replica map this is, to share it when unchanged
}

// Progress is a leader's view of one replica.
type Progress struct {
	Match, Next uint64
	State       ProgressState
	Active      bool // heard from within the last election timeout
	// SnapshotFailures counts the snapshots to the replica that failed in
	// a row (0 after one arrives); SnapshotError says why the last did.
	SnapshotFailures uint64
	SnapshotError    string
}

// statusKey is what a published Status depends on besides progress.
type statusKey struct {
	role                 raft.StateType
	leader, term, commit uint64
	applied              uint64
	serving              bool
	replicasVersion      uint64
}

// publishStatus publishes the group's Status for other goroutines. It runs
// after every pass, so it allocates only when something changed (and the
// leader's follower progress only once per tick).
func (g *group) publishStatus(refreshProgress bool) {
	key := statusKey{role: g.role, leader: g.leader, term: g.term, commit: g.commit, applied: g.applied,
		serving: g.serving.Load(), replicasVersion: g.replicasVersion}
	prev := g.status.Load()
	if prev != nil && key == g.published && !(refreshProgress && g.role == raft.StateLeader) {
		return
	}
	g.published = key
	if role := roleOf(g.role); prev == nil || prev.Role != role {
		if prev != nil {
			g.h.m.GroupsByRole.WithLabelValues(prev.Role.String()).Dec()
		}
		g.h.m.GroupsByRole.WithLabelValues(role.String()).Inc()
		campaigning := func(r Role) bool { return r == RoleCandidate || r == RolePreCandidate }
		if campaigning(role) && (prev == nil || !campaigning(prev.Role)) {
			g.h.m.Elections.Inc()
		}
	}
	var progress map[ReplicaID]Progress
	if g.role != raft.StateLeader {
		g.snapFails = nil // a new leader counts its own
	}
	if g.role == raft.StateLeader {
		if prev != nil && !refreshProgress {
			progress = prev.Progress
		}
		if progress == nil {
			progress = make(map[ReplicaID]Progress)
			g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
				p := Progress{Match: pr.Match, Next: pr.Next, State: progressStateOf(pr.State), Active: pr.RecentActive}
				if f := g.snapFails[id]; f != nil {
					p.SnapshotFailures, p.SnapshotError = f.count, f.last
				}
				progress[ReplicaID(id)] = p
			})
			for id := range g.snapFails {
				if _, ok := progress[ReplicaID(id)]; !ok {
					delete(g.snapFails, id) // a replica removed
				}
			}
		}
	}
	var replicas map[ReplicaID]NodeID
	var learners []ReplicaID
	if prev != nil && key.replicasVersion == prev.replicasVersion {
		replicas, learners = prev.Replicas, prev.Learners // immutable once published
	} else {
		replicas = g.replicaNodes()
		for _, r := range g.confState.GetLearners() {
			learners = append(learners, ReplicaID(r))
		}
	}
	g.status.Store(&Status{
		GroupID: GroupID(g.id), ReplicaID: ReplicaID(g.replicaID), Role: roleOf(g.role),
		Leader: NodeID(g.replicas[g.leader]), Term: g.term, Commit: g.commit, Applied: g.applied,
		Replicas: replicas, Learners: learners, Serving: key.serving, Progress: progress, replicasVersion: key.replicasVersion,
	})
}

// notLeader is the answer of a host that does not lead the group.
func (g *group) notLeader() *NotLeaderError {
	return &NotLeaderError{GroupID: GroupID(g.id), Leader: NodeID(g.leaderNode.Load())}
}

// closed returns why the group takes no new requests, nil if it does.
func (g *group) closed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mu.refuse
}

// admitLocked returns why the group takes no new request of a kind: it is
// closed, or it holds MaxGroupProposals requests of the kind already
// (ErrBusy; refusals are counted by kind, proposals by Propose's result).
func (g *group) admitLocked(outstanding int, kind string) error {
	if g.mu.refuse != nil {
		return g.mu.refuse
	}
	if outstanding >= g.maxProposals() {
		if kind != "proposal" {
			g.h.m.RequestsRefused.WithLabelValues(kind).Inc()
		}
		return g.h.busy("group %d has %d %ss waiting", g.id, outstanding, kind)
	}
	return nil
}

// queueInboundLocked adds a message to the inbox, borrowing the inbox's
// slice from the pool if it has none.
func (g *group) queueInboundLocked(in inbound) {
	if g.mu.inboxBox == nil {
		g.mu.inboxBox, g.mu.inbox = inboxPool.get()
	}
	g.mu.inbox = append(g.mu.inbox, in)
}

// maxLearnScanBytes bounds what a replica reads of its unapplied log at
// start to learn who hosts the replicas it adds.
const maxLearnScanBytes = 16 << 20

// maxLearned bounds the replica-to-node guesses a group keeps from
// traffic: a group has a handful of replicas, a peer may claim any ID.
const maxLearned = 16

// inbound is a message from a peer and the node it came from.
type inbound struct {
	m       *pb.Message
	from    uint64
	quiesce bool // a quiesce heartbeat
	wake    bool // not a Raft message: a request to wake (never stepped)
}

// deliver queues an inbound message, dropping it if the group's inbox or
// the host's inbox budget is full (raft retransmits) or if it is addressed
// to another replica ID (a stale or future incarnation of this replica).
// It reports whether the message found the inbox empty: only then must the
// caller raise the group's flag (a worker drains the whole inbox).
func (g *group) deliver(from uint64, e transport.Envelope) bool {
	m := e.Message
	if m.GetTo() != g.replicaID {
		g.h.m.MessagesDropped.WithLabelValues("stale_replica").Inc()
		return false
	}
	// The failure detector's messages have room of their own: a budget
	// of an eighth of the host's inbox budget that data (inbound appends,
	// or a leader's own appends the log writer refused) never takes, and
	// as many again as a group's inbox holds. A host full of appends under
	// overload must not drop the heartbeats and votes that keep its
	// leaders.
	size := int64(64 + len(m.GetContext()))
	for _, e := range m.GetEntries() {
		size += int64(32 + len(e.GetData()))
	}
	control := controlMessage(m)
	charged, budget, limit := &g.h.inboxBytes, g.h.cfg.InboxBudgetBytes, g.h.cfg.MaxGroupInbox
	if control {
		charged, budget, limit = &g.h.controlBytes, budget/8, 2*limit
	}
	if charged.Add(size) > budget {
		charged.Add(-size)
		g.h.m.InboxDropped.Inc()
		return false
	}
	g.mu.Lock()
	if g.mu.refuse != nil || len(g.mu.inbox) >= limit {
		closed := g.mu.refuse != nil
		g.mu.Unlock()
		charged.Add(-size)
		if closed {
			g.h.m.MessagesDropped.WithLabelValues("closed_group").Inc()
		} else {
			g.h.m.InboxDropped.Inc()
		}
		return false
	}
	first := len(g.mu.inbox) == 0
	g.queueInboundLocked(inbound{m: m, from: from, quiesce: e.Quiesce, wake: e.Wake})
	if control {
		g.mu.controlBytes += size
	} else {
		g.mu.inboxBytes += size
	}
	g.mu.Unlock()
	g.h.m.InboxBytes.Add(float64(size))
	return first
}
