package transport

import (
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// Frames and coalesced heartbeats.
//
// A frame carries the messages of many groups to one peer. Heartbeats and
// heartbeat responses do not travel as Raft messages: each becomes a small
// Heartbeat record (group, from, to, term, commit, context, quiesce) in the
// frame's coalesced lists, so an idle host sends one frame per peer per
// flush whatever the number of groups. The receiver delivers a frame's
// heartbeats before its messages, and the sender puts the other control
// messages (votes, timeout-now) before the data: the failure detector's
// messages may overtake a group's appends, which Raft tolerates (a
// heartbeat's commit never exceeds what the follower acknowledged), and
// never wait behind them. Any other two messages of a group keep their
// order. Two heartbeats of a group are two records, never merged.
//
// A frame with nothing else to carry may be a liveness record: it says
// only that its sender is alive (see outbox.flush).
//
// Both transports build and read frames here, so every cluster test runs
// the coalescing.

// coalescible reports whether m is a heartbeat or heartbeat response
// carrying only what a Heartbeat record keeps.
func coalescible(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgHeartbeat:
	case pb.MsgHeartbeatResp:
		if m.Commit != nil {
			return false
		}
	default:
		return false
	}
	return m.LogTerm == nil && m.Index == nil && len(m.Entries) == 0 && m.Vote == nil &&
		m.Snapshot == nil && m.Reject == nil && m.RejectHint == nil && len(m.Responses) == 0
}

// framer packs a peer's queued envelopes into encoded frames within the
// bounds (exact: every record is sized before the frame is cut).
type framer struct {
	maxMessages, maxBytes int
	incarnation           uint64 // the sender's, written in every frame
	sizes                 []int  // per envelope of the frame: its message's body size, -1 for a heartbeat
	pool                  mem.BufferPool
}

func newFramer(cfg Config) *framer {
	return &framer{maxMessages: cfg.MaxFrameMessages, maxBytes: cfg.MaxFrameBytes, pool: mem.DefaultBufferPool()}
}

// liveness encodes a frame that is only a liveness record.
func (f *framer) liveness() *[]byte {
	buf := f.pool.Get(f.sizeIncarnation() + sizeVarintField(fFrameLiveness, 1))
	b := f.appendIncarnation((*buf)[:0])
	*buf = appendVarintField(b, fFrameLiveness, 1)
	return buf
}

func (f *framer) sizeIncarnation() int {
	if f.incarnation == 0 {
		return 0
	}
	return sizeVarintField(fFrameIncarnation, f.incarnation)
}

func (f *framer) appendIncarnation(b []byte) []byte {
	if f.incarnation == 0 {
		return b
	}
	return appendVarintField(b, fFrameIncarnation, f.incarnation)
}

// pack calls emit with each frame, encoded in a buffer from the pool, and
// the envelopes it carries (a contiguous run of queue), in order; it stops
// early if emit returns false. emit owns the buffer. The queue comes
// control lane first (see outbox), so heartbeats overtake appends only as
// the control lane allows.
func (f *framer) pack(queue []Envelope, emit func(frame *[]byte, carried []Envelope, heartbeats int) bool) {
	start := 0
	for start < len(queue) {
		f.sizes = f.sizes[:0]
		bytes, heartbeats, messages := f.sizeIncarnation(), 0, 0
		end := start
		for ; end < len(queue); end++ {
			e := queue[end]
			size, body := 0, -1 // body: -1 for a heartbeat record
			hb := coalescible(e.Message)
			if hb {
				size = sizeHeartbeat(e)
			} else {
				body = sizeMessage(e.Message)
				size = sizeGroupMessage(e.GroupID, body)
			}
			// Heartbeat records count in bytes only: an idle host's
			// heartbeats for every group go in one frame per flush.
			if end > start && ((!hb && messages >= f.maxMessages) || bytes+size > f.maxBytes) {
				break
			}
			if hb {
				heartbeats++
			} else {
				messages++
			}
			f.sizes = append(f.sizes, body)
			bytes += size
		}
		buf := f.pool.Get(bytes)
		b := f.appendIncarnation((*buf)[:0])
		for i, e := range queue[start:end] {
			if f.sizes[i] < 0 {
				b = appendHeartbeat(b, e)
			} else {
				b = appendGroupMessage(b, e.GroupID, e.Message, f.sizes[i])
			}
		}
		*buf = b
		if !emit(buf, queue[start:end], heartbeats) {
			return
		}
		start = end
	}
}

// unpack turns a frame decoded by gRPC's standard protobuf codec into
// envelopes, heartbeats first, counting what it drops as malformed.
func unpack(frame *peerpb.Frame, in *inFrame) {
	in.handshake, in.size, in.liveness, in.incarnation = frame.GetHandshake(), proto.Size(frame), frame.GetLiveness(), frame.GetIncarnation()
	in.envs = make([]Envelope, 0, len(frame.GetHeartbeats())+len(frame.GetHeartbeatResponses())+len(frame.GetMessages()))
	for _, list := range [...]struct {
		recs []*peerpb.Heartbeat
		t    pb.MessageType
	}{{frame.GetHeartbeats(), pb.MsgHeartbeat}, {frame.GetHeartbeatResponses(), pb.MsgHeartbeatResp}} {
		for _, h := range list.recs {
			if h.GetGroupId() == 0 || h.GetFrom() == 0 || h.GetTo() == 0 {
				in.badHB++
				continue
			}
			m := &pb.Message{Type: list.t.Enum(), From: new(h.GetFrom()), To: new(h.GetTo()), Term: new(h.GetTerm())}
			if list.t == pb.MsgHeartbeat {
				m.Commit = new(h.GetCommit())
			}
			if len(h.GetContext()) > 0 {
				m.Context = h.GetContext()
			}
			in.envs = append(in.envs, Envelope{GroupID: h.GetGroupId(), Message: m, Quiesce: h.GetQuiesce() && list.t == pb.MsgHeartbeat,
				Wake: h.GetWake()})
		}
	}
	for _, gm := range frame.GetMessages() {
		if checkMessage(gm.GetGroupId(), gm.GetMessage()) != nil {
			in.badMsg++
			continue
		}
		in.envs = append(in.envs, Envelope{GroupID: gm.GetGroupId(), Message: gm.GetMessage()})
	}
}

// checkMessage rejects what no peer may send: no group, no addresses, an
// unknown type, a type raft keeps to one node, or a snapshot outside the
// snapshot stream. Raft trusts what it is stepped; the network is where
// trust ends.
func checkMessage(groupID uint64, m *pb.Message) error {
	t := m.GetType()
	switch {
	case m == nil:
		return fmt.Errorf("%w: empty message", ErrMalformed)
	case groupID == 0:
		return fmt.Errorf("%w: group 0", ErrMalformed)
	case m.GetFrom() == 0 || m.GetTo() == 0:
		return fmt.Errorf("%w: %s without from or to", ErrMalformed, t)
	case !knownMessageType(uint64(t)):
		return fmt.Errorf("%w: unknown message type %d", ErrMalformed, t)
	case t == pb.MsgSnap:
		return fmt.Errorf("%w: MsgSnap outside a snapshot stream", ErrMalformed)
	case t == pb.MsgUnreachable:
		return nil // the hosts' removal notice (a host-level message raft never sees)
	case raft.IsLocalMsg(t):
		return fmt.Errorf("%w: local message type %s", ErrMalformed, t)
	}
	return nil
}
