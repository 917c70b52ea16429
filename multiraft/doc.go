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
// applied state (machine.go). ReadIndex (readindex.go) is a linearizable
// read barrier on any replica.
//
// # Goroutines
//
// The host runs none of its own: the scheduler's workers and tick loop, the
// store's log writer and the transport's senders do the work, and each is
// stopped by Close. A group owns nothing but memory.
//
// # Not yet here
//
// Quiescence of idle groups, the gRPC transport with coalesced heartbeats,
// and chunked snapshot streaming come with their own issues.
package multiraft
