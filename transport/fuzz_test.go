package transport

import (
	"context"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// nopHandler takes everything and keeps nothing.
type nopHandler struct{}

func (nopHandler) HandleMessages(NodeID, []Envelope)             {}
func (nopHandler) HandleAlive(NodeID, uint64)                    {}
func (nopHandler) HandleUnreachable(NodeID, []Envelope)          {}
func (nopHandler) HandleSnapshot(NodeID, *InboundSnapshot) error { return nil }
func (nopHandler) HandleAdmin(context.Context, NodeID, *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	return &peerpb.AdminResponse{}, nil
}

// FuzzFrameDecode feeds arbitrary bytes to the inbound path of a frame:
// decode, checks, unpacking, metrics and the handler. Nothing may panic,
// and nothing that reaches the handler may be a message no peer may send.
// The seeds run in every `go test`; `go test -fuzz FuzzFrameDecode
// ./transport` explores further.
func FuzzFrameDecode(f *testing.F) {
	good := &peerpb.Frame{
		Handshake: &peerpb.Handshake{ClusterId: 1, FromNode: 1, ToNode: 2},
		Messages: []*peerpb.GroupMessage{
			{GroupId: 3, Message: msg(3, 1, pb.MsgApp).Message},
			{GroupId: 4, Message: &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(2)),
				Entries: []*pb.Entry{{Index: new(uint64(5)), Term: new(uint64(2)), Data: []byte("payload")}}}},
			{GroupId: 5, Message: &pb.Message{Type: pb.MsgHup.Enum(), From: new(uint64(1)), To: new(uint64(2))}},
			{GroupId: 0},
		},
		Heartbeats:         []*peerpb.Heartbeat{{GroupId: 1, From: 1, To: 2, Term: 3, Commit: 4, Context: []byte("ctx")}, {}},
		HeartbeatResponses: []*peerpb.Heartbeat{{GroupId: 1, From: 2, To: 1, Term: 3}},
	}
	for _, fr := range []*peerpb.Frame{{}, good} {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x02, 0x08})                   // a truncated message
	f.Add([]byte{0x12, 0x04, 0x12, 0x02, 0x08, 0xff}) // a bad enum varint
	c := newCore(2, Config{}, nil)
	h := &checkingHandler{}
	if err := c.start(h, Env{}); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.close)
	f.Fuzz(func(t *testing.T, data []byte) {
		h.t = t
		// Both decoders: this package's, and gRPC's standard codec's
		// followed by unpack (a peer may use either).
		var in inFrame
		if decodeFrame(data, &in) == nil {
			c.receiveFrame(1, &in)
		}
		var fr peerpb.Frame
		if proto.Unmarshal(data, &fr) == nil {
			var std inFrame
			unpack(&fr, &std)
			c.receiveFrame(1, &std)
		}
	})
}

// checkingHandler fails the fuzz run if a message no peer may send got
// through.
type checkingHandler struct {
	nopHandler
	t *testing.T
}

func (h *checkingHandler) HandleMessages(_ NodeID, batch []Envelope) {
	for _, e := range batch {
		if coalescible(e.Message) {
			continue
		}
		if err := checkMessage(e.GroupID, e.Message); err != nil {
			h.t.Fatalf("delivered a message that fails the checks: %v", err)
		}
	}
}
