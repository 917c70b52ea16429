// Package multiraft is Flotilla's public API: a Host runs thousands of Raft
// groups of one node over one store, one scheduler and one transport.
//
// # Entry points
//
// NewHost(Config) opens the store and starts everything; CreateGroup makes
// this host a founding member of a group, JoinGroup an empty replica
// waiting to be added; Propose replicates a command and returns once it is
// applied here; Status describes a group; Close stops the host.
//
// Three ID spaces meet here, each a type of its own: GroupID (a group, a
// broker's partition), NodeID (a host of the cluster) and ReplicaID (one
// replica of one group, allotted by its leader and never reused). Every
// error wraps a sentinel of errors.go. Package flotillatest runs hosts in
// one test process, with your state machine, for your own tests.
//
// # The life of a proposal
//
// Propose puts the proposal on its group's bounded queue (a full queue or
// an exhausted host budget is ErrBusy at once; a follower answers with a
// *NotLeaderError naming the leader) and raises the group's Requests flag.
// A scheduler worker then owns the group (process.go): it steps the
// responses of durable appends, then peers' messages, applies at most a
// couple of ticks, packs every queued proposal into ONE entry, and handles
// each Ready of the group's RawNode (etcd raft, AsyncStorageWrites on):
// messages for peers go to the transport at once; the MsgStorageAppend goes
// to the store's log writer, which commits many groups' appends with one
// fsync and only then releases the append's responses (votes and append
// acknowledgements to peers, the rest stepped back here); the
// MsgStorageApply is applied inline (apply.go): the state machine runs the
// commands in log order and the waiting proposals complete.
//
// Outcomes are exact: an index applied with other proposal IDs fails the
// proposals that expected it with ErrRejected (definite); a lost leadership
// or a context that ends while a proposal is pending gives ErrAmbiguous.
// A new leader serves proposals, and is announced through
// EventListener.LeaderChanged, only once it has applied an entry of its own
// term.
//
// # Membership, snapshots, reads
//
// ChangeMembership proposes ConfChangeV2 entries; replica IDs come from a
// replicated counter and the node of each new replica travels in the
// change's context (membership.go), so replica IDs are never reused and a
// partition can leave a node and come back as a new replica. A replica cut
// off while it was removed is told by a member once it is heard from again
// and collected (gc.go). Followers behind the leader's truncated log get a
// snapshot, streamed through the transport and installed on the append
// path (snapshot.go); every send's outcome reaches raft. In-memory state
// machines are made durable by periodic snapshots, after which the log is
// truncated (compaction.go); on-disk ones commit their writes with the
// applied state (machine.go). Host.Snapshot takes a durable snapshot on
// request; a state machine that implements Snapshotter is only captured
// on the worker and written on another goroutine while its group goes on
// applying (persist.go). AddReplica adds a replica on another host
// in one call from the leader (a learner, created there through the admin
// call, then promoted); a removed replica deletes itself.
//
// Reads (readindex.go): Read runs a function on the group's worker once
// the replica has applied everything committed before the call (raft's
// ReadIndex), so it sees every acknowledged write and never races Apply;
// StaleRead runs one at once, without asking the leader; ReadIndex is the
// bare barrier.
//
// # Observing
//
// EventListener's callbacks run on the workers; Subscribe gives a bounded
// channel of the same events and more (membership changes, snapshots
// saved and installed) that drops and counts what a slow reader leaves,
// so that no reader can hold the host up (observe.go).
//
// # When things go wrong
//
// Every request ends with a result or a definite error, whatever happens
// to its group, and gives back what it charged (fail.go): a pass takes
// everything queued for its group at once, and a group that stops being
// processed (the host closed or failed, the group was removed, or it
// failed alone) answers all it holds and refuses new requests from then
// on. Local trouble costs only what it must:
//
//   - Backpressure delays, never fails: an append the log writer refuses
//     waits in its group's backlog, a received snapshot with it, its data
//     staged until raft takes or drops it (snapshot.go).
//   - A transfer whose caller left is dropped and raft's attempt aborted;
//     a membership change raft refuses (one is pending) is ErrRejected at
//     once; reads and transfers waiting per group are bounded like every
//     queue (ErrBusy, counted).
//   - A panic in a pass (raft on a message it cannot take, a state
//     machine on a command) fails that group on this host alone
//     (ErrGroupFailed, EventListener.GroupFailed, a metric); the host,
//     its other groups and the group's other replicas go on, and the
//     failed replica can be removed.
//   - A disk short of space trips the space alarm (space.go): proposals
//     and new replicas get ErrNoSpace at once, while everything that frees
//     space goes on; it clears by itself.
//   - What must stop does, loudly: a failed write or sync, a stalled disk,
//     a storage read error (raft's panic on it included) fail the whole
//     host (fail-stop, EventListener.HostFailed, ErrStopped).
//
// # Liveness at scale and under load
//
// Leadership must survive thousands of idle groups and any offered load,
// so the failure detector is kept apart from the data:
//
//   - Quiescence (quiesce.go). An idle group's leader sends one quiesce
//     heartbeat instead of ticking and leaves the tick loop with its
//     followers: a quiesced group costs no CPU and sends nothing. Any
//     request, or a message that leaves raft work, wakes it.
//   - Node liveness (liveness.go). One view per host of which peers are
//     live, fed by every frame (and a liveness record per peer per tick
//     when nothing else goes), and of each peer's incarnation. Followers
//     of a dead or restarted leader's node forget it and elect: the
//     successor (the first live voter of the group's preference) at once,
//     the others three quarters of an election timeout later or more,
//     unless they grant its votes meanwhile; and while a group has a
//     leader, followers other than its successor run their election clock
//     at half speed, so that raft's own timer does not start a second
//     candidate first (two candidates of two live voters split the vote).
//     A leader quiesces past a dead follower's node and wakes when it is
//     back where it lags. Costs are per peer, not per group.
//   - A control lane in the transport (a queue and a stream per peer of
//     its own) and in the scheduler: heartbeats, votes and timeout-now go
//     ahead of appends, have an inbox budget of their own, and groups
//     without a serving leader (none known, one on a node that is not
//     live, an election, or a new term's first entry not yet applied) are
//     processed first.
//   - Admission control: a host holds at most MaxProposalsInFlight
//     proposals; beyond it Propose fails at once with a *BusyError and a
//     jittered retry hint, so callers queue and the host stays well within
//     its election timeout.
//   - Start-up: only a group's preferred replica campaigns at first; the
//     others hold back an election timeout, so a host starting with many
//     groups does not start an election storm and leaders spread.
//
// # Goroutines
//
// The host runs one of its own, the space alarm's disk check; the
// scheduler's workers and tick loop (which also moves the liveness view),
// the store's log writer and the transport's senders do the rest, and
// each is stopped by Close. A group owns nothing but memory.
package multiraft
