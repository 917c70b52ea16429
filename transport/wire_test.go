package transport

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/proto/peerpb"
)

var wireTypes = []pb.MessageType{pb.MsgApp, pb.MsgAppResp, pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote,
	pb.MsgPreVoteResp, pb.MsgHeartbeat, pb.MsgHeartbeatResp, pb.MsgReadIndex, pb.MsgReadIndexResp,
	pb.MsgTimeoutNow, pb.MsgTransferLeader, pb.MsgProp}

// randomMessage returns a message a peer may send, each optional field
// present or not, values small or large.
func randomMessage(r *rand.Rand) *pb.Message {
	u := func() *uint64 {
		if r.IntN(4) == 0 {
			return nil
		}
		v := r.Uint64() >> r.IntN(64)
		return &v
	}
	bs := func() []byte {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, r.IntN(300))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	from, to := uint64(1+r.IntN(5)), uint64(1+r.IntN(5))
	m := &pb.Message{Type: wireTypes[r.IntN(len(wireTypes))].Enum(), From: &from, To: &to, Term: u(),
		LogTerm: u(), Index: u(), Commit: u(), Vote: u(), RejectHint: u(), Context: bs()}
	if r.IntN(3) == 0 {
		m.Reject = new(r.IntN(2) == 0)
	}
	for range r.IntN(4) {
		e := &pb.Entry{Term: u(), Index: u(), Data: bs()}
		if r.IntN(3) == 0 {
			e.Type = pb.EntryConfChangeV2.Enum()
		}
		m.Entries = append(m.Entries, e)
	}
	if r.IntN(20) == 0 {
		m.Snapshot = &pb.Snapshot{} // older peers' empty snapshot: the generic path
	}
	if r.IntN(4) == 0 { // a heartbeat the framer coalesces
		m = &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: &from, To: &to, Term: u(), Commit: u()}
		if r.IntN(2) == 0 {
			m.Type = pb.MsgHeartbeatResp.Enum()
			m.Commit = nil
		}
		if r.IntN(3) == 0 {
			m.Context = []byte("read-index-ctx")
		}
	}
	return m
}

// same reports whether got is what the receiver should make of sent: the
// same message, except that a coalesced heartbeat comes back with its
// fields set (zero where sent unset).
func same(sent, got *pb.Message) bool {
	if !coalescible(sent) {
		return proto.Equal(sent, got)
	}
	want := &pb.Message{Type: sent.Type, From: new(sent.GetFrom()), To: new(sent.GetTo()), Term: new(sent.GetTerm())}
	if sent.GetType() == pb.MsgHeartbeat {
		want.Commit = new(sent.GetCommit())
	}
	if len(sent.Context) > 0 {
		want.Context = sent.Context
	}
	return proto.Equal(want, got)
}

// TestWireRoundTrip: random queues of many groups' messages, packed into
// frames under small bounds, come back exactly, group by group in order,
// through this package's decoder and through the standard protobuf codec
// (so the wire is peer.proto's Frame); every frame is as long as it was
// sized, and within the byte bound unless it holds one record.
func TestWireRoundTrip(t *testing.T) {
	testseed.Run(t, testseed.Range(1, 6), testWireRoundTrip)
}

func testWireRoundTrip(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	for round := range 200 {
		var queue []Envelope
		for range 1 + r.IntN(60) {
			e := Envelope{GroupID: 1 + uint64(r.IntN(8)), Message: randomMessage(r)}
			if coalescible(e.Message) {
				// One direction per group, as between a leader and a
				// follower: the standard codec's lists would reorder a
				// group's heartbeats against its responses.
				e.Message.Type = pb.MsgHeartbeat.Enum()
				if e.GroupID%2 == 0 {
					e.Message.Type, e.Message.Commit = pb.MsgHeartbeatResp.Enum(), nil
				}
			}
			queue = append(queue, e)
		}
		// The receiver delivers a frame's heartbeats first, and the
		// outbox hands the framer its control lane first: heartbeats come
		// before messages, as they would from a queue.
		slices.SortStableFunc(queue, func(a, b Envelope) int {
			return cmp.Compare(b2i(!coalescible(a.Message)), b2i(!coalescible(b.Message)))
		})
		maxBytes := 64 + r.IntN(4000)
		fr := newFramer(Config{MaxFrameMessages: 1 + r.IntN(20), MaxFrameBytes: maxBytes})
		want := map[uint64][]*pb.Message{}
		for _, e := range queue {
			want[e.GroupID] = append(want[e.GroupID], e.Message)
		}
		got := [2]map[uint64][]*pb.Message{{}, {}}
		fr.pack(queue, func(frame *[]byte, carried []Envelope, _ int) bool {
			b := *frame
			if len(carried) > 1 && len(b) > maxBytes {
				t.Fatalf("round %d: a frame of %d records is %d bytes, bound %d", round, len(carried), len(b), maxBytes)
			}
			var own inFrame
			if err := decodeFrame(b, &own); err != nil {
				t.Fatalf("round %d: decode: %v", round, err)
			}
			var std peerpb.Frame
			if err := proto.Unmarshal(b, &std); err != nil {
				t.Fatalf("round %d: the standard codec refuses the frame: %v", round, err)
			}
			if n := proto.Size(&std); n != len(b) {
				t.Fatalf("round %d: frame of %d bytes re-encodes to %d", round, len(b), n)
			}
			var via inFrame
			unpack(&std, &via)
			for i, in := range []*inFrame{&own, &via} {
				if in.badHB+in.badMsg != 0 || len(in.envs) != len(carried) {
					t.Fatalf("round %d: decoder %d: %d of %d records, %d dropped", round, i, len(in.envs), len(carried), in.badHB+in.badMsg)
				}
				for _, e := range in.envs {
					got[i][e.GroupID] = append(got[i][e.GroupID], e.Message)
				}
			}
			return true
		})
		for i := range got {
			for g, sent := range want {
				if len(got[i][g]) != len(sent) {
					t.Fatalf("round %d: decoder %d: group %d got %d messages, sent %d", round, i, g, len(got[i][g]), len(sent))
				}
				for j := range sent {
					if !same(sent[j], got[i][g][j]) {
						t.Fatalf("round %d: decoder %d: group %d message %d:\nsent %v\n got %v", round, i, g, j, sent[j], got[i][g][j])
					}
				}
			}
		}
	}
}

// TestWireDecodesStandardEncoding: frames written by the standard protobuf
// encoder (what a peer on gRPC's default codec sends) decode the same.
func TestWireDecodesStandardEncoding(t *testing.T) {
	testseed.Run(t, testseed.Range(1, 6), testWireDecodesStandardEncoding)
}

func testWireDecodesStandardEncoding(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 2))
	for round := range 200 {
		frame := &peerpb.Frame{Handshake: &peerpb.Handshake{ClusterId: r.Uint64(), FromNode: 1, ToNode: 2}}
		for range r.IntN(20) {
			m := randomMessage(r)
			g := 1 + uint64(r.IntN(8))
			if coalescible(m) {
				hb := &peerpb.Heartbeat{GroupId: g, From: m.GetFrom(), To: m.GetTo(), Term: m.GetTerm(), Commit: m.GetCommit(), Context: m.GetContext()}
				if m.GetType() == pb.MsgHeartbeat {
					frame.Heartbeats = append(frame.Heartbeats, hb)
				} else {
					frame.HeartbeatResponses = append(frame.HeartbeatResponses, hb)
				}
				continue
			}
			frame.Messages = append(frame.Messages, &peerpb.GroupMessage{GroupId: g, Message: m})
		}
		b, err := proto.Marshal(frame)
		if err != nil {
			t.Fatal(err)
		}
		var own, via inFrame
		if err := decodeFrame(b, &own); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		unpack(frame, &via)
		if !proto.Equal(own.handshake, frame.Handshake) {
			t.Fatalf("round %d: handshake %v, sent %v", round, own.handshake, frame.Handshake)
		}
		if len(own.envs) != len(via.envs) || own.badHB+own.badMsg != via.badHB+via.badMsg {
			t.Fatalf("round %d: %d envelopes (%d bad), standard %d (%d bad)", round, len(own.envs), own.badHB+own.badMsg, len(via.envs), via.badHB+via.badMsg)
		}
		for i := range own.envs {
			if own.envs[i].GroupID != via.envs[i].GroupID || !proto.Equal(own.envs[i].Message, via.envs[i].Message) {
				t.Fatalf("round %d: envelope %d: %v, standard %v", round, i, own.envs[i], via.envs[i])
			}
		}
	}
}

// TestWireMalformed: broken structure is an error; broken records are
// dropped and counted; unknown fields are skipped; nothing panics.
func TestWireMalformed(t *testing.T) {
	good := *packOne(newFramer(DefaultConfig()), []Envelope{msg(3, 7, pb.MsgApp), heartbeat(4, 2, nil)})
	for i := range good { // every truncation
		var in inFrame
		if decodeFrame(good[:i], &in) == nil && len(in.envs) == 2 {
			t.Fatalf("a frame cut to %d of %d bytes decoded whole", i, len(good))
		}
	}
	// An unknown top-level field (number 15, varint) is skipped.
	var in inFrame
	if err := decodeFrame(append([]byte{0x78, 0x05}, good...), &in); err != nil || len(in.envs) != 2 {
		t.Fatalf("unknown field: %v, %d envelopes", err, len(in.envs))
	}
	// A messages record whose body is not a message: dropped, counted.
	bad := []byte{0x12, 0x04, 0x08, 0x01, 0x12, 0x05}
	in = inFrame{}
	if err := decodeFrame(append(bad[:len(bad):len(bad)], good...), &in); err != nil || in.badMsg != 1 || len(in.envs) != 2 {
		t.Fatalf("bad record: %v, %d bad, %d envelopes", err, in.badMsg, len(in.envs))
	}
}

// TestWireEntriesOwnTheirData: decoded entries do not alias the frame's
// buffer (they live on in the entry cache, which must not keep whole
// frames alive): scribbling over the buffer leaves them intact.
func TestWireEntriesOwnTheirData(t *testing.T) {
	e := msg(3, 7, pb.MsgApp)
	e.Message.Entries = []*pb.Entry{{Index: new(uint64(8)), Term: new(uint64(1)), Data: []byte("first")},
		{Index: new(uint64(9)), Term: new(uint64(1)), Data: []byte("second")}}
	buf := *packOne(newFramer(DefaultConfig()), []Envelope{e})
	var in inFrame
	if err := decodeFrame(buf, &in); err != nil || len(in.envs) != 1 {
		t.Fatalf("decode: %v, %d envelopes", err, len(in.envs))
	}
	clear(buf)
	got := in.envs[0].Message.GetEntries()
	if string(got[0].GetData()) != "first" || string(got[1].GetData()) != "second" {
		t.Fatalf("entries changed with the frame's buffer: %q %q", got[0].GetData(), got[1].GetData())
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
