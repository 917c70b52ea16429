package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// NodeID identifies a host in the cluster.
type NodeID = uint64

// ProtocolVersion is the version of the peer protocol this transport
// speaks (peerpb.Handshake.protocol_version). Version 2 added quiesce
// heartbeats and liveness records, version 3 the wake flag of heartbeat
// records (a request to wake, never stepped) and the control lane's
// stream; a peer of another version would misread them, so its calls are
// refused.
const ProtocolVersion = 3

// Envelope is one Raft message of one group.
type Envelope struct {
	GroupID uint64
	Message *pb.Message
	// Quiesce marks a MsgHeartbeat by which the leader quiesces the
	// group (see multiraft); it travels in the coalesced heartbeat record.
	Quiesce bool
	// Wake marks a heartbeat or heartbeat response that is no Raft
	// message but asks the receiving replica to wake from quiescence; it
	// is never stepped.
	Wake bool
}

// OutboundSnapshot is a snapshot to send: the MsgSnap raft produced and a
// function that writes the state machine's data.
type OutboundSnapshot struct {
	GroupID uint64
	Message *pb.Message
	// Size is how many bytes WriteData writes, announced to the receiver
	// before any data so that it can refuse what it has no room for; a
	// WriteData that writes more fails the stream.
	Size int64
	// Measure, if set, returns Size instead: it is called on the sending
	// goroutine, for a size that takes a pass over the data to learn.
	Measure   func() (int64, error)
	WriteData func(w io.Writer) error
}

// InboundSnapshot is a snapshot arriving from a peer: the MsgSnap and its
// data as a stream.
type InboundSnapshot struct {
	GroupID uint64
	Message *pb.Message
	// Size is the data's size as the sender announced it; Data fails
	// rather than yield more. No data has moved before the first Read, so
	// a handler without room refuses before that.
	Size int64
	Data io.Reader
}

// Handler receives what arrives from peers. HandleMessages and
// HandleUnreachable must not block; HandleSnapshot may take as long as the
// data does, and its error is the sender's failure.
type Handler interface {
	// HandleAlive says that a frame from a peer arrived (one that the
	// filters did not cut off): the peer is alive, in the given
	// incarnation (see Env.Incarnation; 0 from a peer that sends none).
	// It comes before the frame's messages.
	HandleAlive(from NodeID, incarnation uint64)
	// HandleMessages delivers a frame's batch from one peer, in the order
	// sent (control messages first).
	HandleMessages(from NodeID, batch []Envelope)
	// HandleUnreachable reports messages to a peer that were dropped or
	// could not be sent.
	HandleUnreachable(to NodeID, dropped []Envelope)
	// HandleSnapshot receives a snapshot; it returns once the data is
	// consumed, with an error if the snapshot was not accepted whole.
	HandleSnapshot(from NodeID, snap *InboundSnapshot) error
	// HandleAdmin serves a control call from a peer (create or remove a
	// replica). Its error goes back to the caller.
	HandleAdmin(ctx context.Context, from NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error)
}

// Env is what a host hands its transport at Start, so that one host
// config covers the transport too.
type Env struct {
	// NodeID is the host's node; a transport built for another refuses
	// to start (its peers would address the wrong node). 0: not checked.
	NodeID NodeID
	// Logger is used where the transport's Config.Logger was left unset.
	Logger *slog.Logger
	// Registerer receives the transport's metrics, if its Config.Metrics
	// was left unset (nil: they stay unregistered); Close unregisters them.
	Registerer prometheus.Registerer
	// Incarnation names the host's current run (random, drawn at start);
	// every frame carries it, so that peers notice a restart.
	Incarnation uint64
}

// Transport sends a host's Raft traffic to its peers.
type Transport interface {
	// Start begins delivering inbound traffic to h, logging and
	// registering metrics as env says. A metric already registered is an
	// error, and nothing starts.
	Start(h Handler, env Env) error
	// Send queues a batch for a peer. It never blocks: what does not fit
	// in the peer's queue is dropped and reported to HandleUnreachable.
	// It keeps nothing of batch itself: the caller may reuse it.
	Send(to NodeID, batch []Envelope)
	// SendSnapshot streams a snapshot to a peer in the background and
	// calls done with the outcome (nil only if the peer accepted it whole).
	SendSnapshot(to NodeID, snap *OutboundSnapshot, done func(error))
	// Admin makes a control call on a peer and returns its answer; the
	// transport fills in the handshake.
	Admin(ctx context.Context, to NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error)
	// Flush sends the plain heartbeats (and heartbeat responses) waiting
	// in the queues: Send holds them back for this, so that many groups'
	// heartbeats leave together. A peer that nothing went to since the
	// last flush gets a liveness record. The host calls it once per tick.
	Flush()
	// Close stops every goroutine of the transport. It cuts the streams of
	// inbound snapshots and returns only once no HandleSnapshot call is
	// left running: the host closes its store after its transport.
	Close() error
}

// Errors of the transports. Snapshot and admin failures wrap them.
var (
	ErrClosed          = errors.New("transport: closed")
	ErrUnknownPeer     = errors.New("transport: unknown or unreachable peer")
	ErrDropped         = errors.New("transport: dropped by filter")
	ErrTooManySnapshot = errors.New("transport: too many snapshots in flight")
	ErrMalformed       = errors.New("transport: malformed input")
	ErrChecksum        = errors.New("transport: snapshot checksum mismatch")
	ErrRefused         = errors.New("transport: refused by peer")
	// ErrExhausted: the peer refused an admin call for lack of a
	// resource (the handler's error wraps it); retry later. It crosses
	// the wire as RESOURCE_EXHAUSTED.
	ErrExhausted     = errors.New("transport: peer out of a resource")
	ErrInvalidConfig = errors.New("transport: invalid config")
)

// isControl reports whether m travels in the control lane, ahead of
// appends: the failure detector's messages (heartbeats and their
// responses, votes, pre-votes and theirs, timeout-now). Raft tolerates
// them overtaking a group's appends.
func isControl(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgHeartbeat, pb.MsgHeartbeatResp, pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp, pb.MsgTimeoutNow:
		return true
	}
	return false
}

// messageSize approximates a message's weight for queue bounds: its
// entries' payloads plus a fixed overhead.
func messageSize(m *pb.Message) int {
	n := 64 + len(m.GetContext())
	for _, e := range m.GetEntries() {
		n += 32 + len(e.GetData())
	}
	return n
}
