package transport

import (
	"errors"
	"fmt"
	"math"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// Frames on the wire, encoded and decoded by hand.
//
// A frame is a peerpb.Frame (proto/peerpb/peer.proto defines it, and
// proto.Unmarshal reads what is written here), but the generic protobuf
// path costs too much on the hottest loop of a host: raftpb's messages
// are proto2 with a pointer per field, so the reflective decoder makes one
// allocation per field and the encoder sizes every frame twice. Here a
// frame is sized once, exactly, encoded once into a buffer of that size,
// and decoded with one allocation per message (its fields share it), two
// per message's entries (their fields; their data, copied out of the
// frame so that a cached entry holds only its message's data), and one
// for all of a frame's heartbeats. Other decoded bytes (contexts) alias
// the frame's buffer, which the receiver owns.
//
// A message with a snapshot or responses (neither ever travels in a
// frame: snapshots have their own stream and responses are local) takes
// the generic path, so any valid message round-trips.

// Field numbers of raft.proto and peer.proto.
const (
	fMsgType, fMsgTo, fMsgFrom, fMsgTerm, fMsgLogTerm, fMsgIndex = 1, 2, 3, 4, 5, 6
	fMsgEntries, fMsgCommit, fMsgSnapshot, fMsgReject            = 7, 8, 9, 10
	fMsgRejectHint, fMsgContext, fMsgVote, fMsgResponses         = 11, 12, 13, 14

	fEntType, fEntTerm, fEntIndex, fEntData = 1, 2, 3, 4

	fFrameHandshake, fFrameMessages, fFrameHeartbeats, fFrameHeartbeatResps, fFrameLiveness, fFrameIncarnation = 1, 2, 3, 4, 5, 6

	fGMGroup, fGMMessage = 1, 2

	fHBGroup, fHBFrom, fHBTo, fHBTerm, fHBCommit, fHBContext, fHBQuiesce, fHBWake = 1, 2, 3, 4, 5, 6, 7, 8

	fHSCluster, fHSFrom, fHSTo, fHSVersion = 1, 2, 3, 4
)

var errWire = errors.New("malformed frame encoding")

// messageTypes marks raftpb's message types (a map lookup per message
// showed in the decoder's profile).
var messageTypes = func() (known [64]bool) {
	for v := range pb.MessageType_name {
		if v < 0 || int(v) >= len(known) {
			panic("transport: raftpb message type out of range")
		}
		known[v] = true
	}
	return known
}()

func knownMessageType(v uint64) bool { return v < uint64(len(messageTypes)) && messageTypes[v] }

func sizeVarintField(num protowire.Number, v uint64) int {
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeBytesField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// generic reports whether a message needs the generic protobuf path.
func generic(m *pb.Message) bool { return m.Snapshot != nil || len(m.Responses) > 0 }

func sizeEntry(e *pb.Entry) int {
	n := 0
	if e.Type != nil {
		n += sizeVarintField(fEntType, uint64(*e.Type))
	}
	if e.Term != nil {
		n += sizeVarintField(fEntTerm, *e.Term)
	}
	if e.Index != nil {
		n += sizeVarintField(fEntIndex, *e.Index)
	}
	if e.Data != nil {
		n += sizeBytesField(fEntData, len(e.Data))
	}
	return n
}

func appendEntry(b []byte, e *pb.Entry) []byte {
	if e.Type != nil {
		b = appendVarintField(b, fEntType, uint64(*e.Type))
	}
	if e.Term != nil {
		b = appendVarintField(b, fEntTerm, *e.Term)
	}
	if e.Index != nil {
		b = appendVarintField(b, fEntIndex, *e.Index)
	}
	if e.Data != nil {
		b = appendBytesField(b, fEntData, e.Data)
	}
	return b
}

// sizeMessage is the encoded size of m.
func sizeMessage(m *pb.Message) int {
	if generic(m) {
		return proto.Size(m)
	}
	n := 0
	for _, f := range [...]struct {
		num protowire.Number
		v   *uint64
	}{{fMsgTo, m.To}, {fMsgFrom, m.From}, {fMsgTerm, m.Term}, {fMsgLogTerm, m.LogTerm}, {fMsgIndex, m.Index},
		{fMsgCommit, m.Commit}, {fMsgRejectHint, m.RejectHint}, {fMsgVote, m.Vote}} {
		if f.v != nil {
			n += sizeVarintField(f.num, *f.v)
		}
	}
	if m.Type != nil {
		n += sizeVarintField(fMsgType, uint64(*m.Type))
	}
	for _, e := range m.Entries {
		n += sizeBytesField(fMsgEntries, sizeEntry(e))
	}
	if m.Reject != nil {
		n += sizeVarintField(fMsgReject, 1)
	}
	if m.Context != nil {
		n += sizeBytesField(fMsgContext, len(m.Context))
	}
	return n
}

// appendMessage appends m's encoding; size is sizeMessage(m).
func appendMessage(b []byte, m *pb.Message, size int) []byte {
	if generic(m) {
		out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
		if err != nil || len(out)-len(b) != size {
			// Marshalling a valid message in memory cannot fail; a size that
			// moved means the message changed while it was being sent.
			panic(fmt.Sprintf("transport: encoding a %s: %v", m.GetType(), err))
		}
		return out
	}
	if m.Type != nil {
		b = appendVarintField(b, fMsgType, uint64(*m.Type))
	}
	for _, f := range [...]struct {
		num protowire.Number
		v   *uint64
	}{{fMsgTo, m.To}, {fMsgFrom, m.From}, {fMsgTerm, m.Term}, {fMsgLogTerm, m.LogTerm}, {fMsgIndex, m.Index}} {
		if f.v != nil {
			b = appendVarintField(b, f.num, *f.v)
		}
	}
	for _, e := range m.Entries {
		b = protowire.AppendTag(b, fMsgEntries, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeEntry(e)))
		b = appendEntry(b, e)
	}
	if m.Commit != nil {
		b = appendVarintField(b, fMsgCommit, *m.Commit)
	}
	if m.Reject != nil {
		b = appendVarintField(b, fMsgReject, protowire.EncodeBool(*m.Reject))
	}
	if m.RejectHint != nil {
		b = appendVarintField(b, fMsgRejectHint, *m.RejectHint)
	}
	if m.Context != nil {
		b = appendBytesField(b, fMsgContext, m.Context)
	}
	if m.Vote != nil {
		b = appendVarintField(b, fMsgVote, *m.Vote)
	}
	return b
}

// Records of a frame. A record's size includes its tag and length.

// sizeGroupMessage is the size of a messages record whose message body
// is body bytes long.
func sizeGroupMessage(group uint64, body int) int {
	inner := sizeVarintField(fGMGroup, group) + sizeBytesField(fGMMessage, body)
	return sizeBytesField(fFrameMessages, inner)
}

func appendGroupMessage(b []byte, group uint64, m *pb.Message, body int) []byte {
	inner := sizeVarintField(fGMGroup, group) + sizeBytesField(fGMMessage, body)
	b = protowire.AppendTag(b, fFrameMessages, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = appendVarintField(b, fGMGroup, group)
	b = protowire.AppendTag(b, fGMMessage, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(body))
	return appendMessage(b, m, body)
}

// heartbeatBody is the size of a Heartbeat record's body; zero fields are
// left out, as proto3 does.
func heartbeatBody(e Envelope) int {
	m, n := e.Message, 0
	for _, f := range [...]struct {
		num protowire.Number
		v   uint64
	}{{fHBGroup, e.GroupID}, {fHBFrom, m.GetFrom()}, {fHBTo, m.GetTo()}, {fHBTerm, m.GetTerm()}, {fHBCommit, m.GetCommit()}} {
		if f.v != 0 {
			n += sizeVarintField(f.num, f.v)
		}
	}
	if len(m.Context) > 0 {
		n += sizeBytesField(fHBContext, len(m.Context))
	}
	if e.Quiesce {
		n += sizeVarintField(fHBQuiesce, 1)
	}
	if e.Wake {
		n += sizeVarintField(fHBWake, 1)
	}
	return n
}

func heartbeatField(m *pb.Message) protowire.Number {
	if m.GetType() == pb.MsgHeartbeat {
		return fFrameHeartbeats
	}
	return fFrameHeartbeatResps
}

func sizeHeartbeat(e Envelope) int {
	return sizeBytesField(heartbeatField(e.Message), heartbeatBody(e))
}

func appendHeartbeat(b []byte, e Envelope) []byte {
	m := e.Message
	b = protowire.AppendTag(b, heartbeatField(m), protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(heartbeatBody(e)))
	for _, f := range [...]struct {
		num protowire.Number
		v   uint64
	}{{fHBGroup, e.GroupID}, {fHBFrom, m.GetFrom()}, {fHBTo, m.GetTo()}, {fHBTerm, m.GetTerm()}, {fHBCommit, m.GetCommit()}} {
		if f.v != 0 {
			b = appendVarintField(b, f.num, f.v)
		}
	}
	if len(m.Context) > 0 {
		b = appendBytesField(b, fHBContext, m.Context)
	}
	if e.Quiesce {
		b = appendVarintField(b, fHBQuiesce, 1)
	}
	if e.Wake {
		b = appendVarintField(b, fHBWake, 1)
	}
	return b
}

// Decoding.

// inFrame is a decoded frame: its handshake (first frame of a stream
// only), its envelopes (heartbeats first, in wire order, then messages),
// and what was dropped as malformed. It embeds a peerpb.Frame so that a
// peer using gRPC's standard protobuf codec is understood too: that codec
// fills the embedded frame, which unpack then turns into envelopes.
type inFrame struct {
	*peerpb.Frame
	decoded     bool // filled by decodeFrame, not by the standard codec
	handshake   *peerpb.Handshake
	envs        []Envelope
	size        int
	liveness    bool   // the frame is a liveness record
	incarnation uint64 // the sender's
	badHB       int    // malformed heartbeat records
	badMsg      int    // malformed message records
}

// heartbeatSlab holds a decoded heartbeat and its fields in one
// allocation (raftpb's fields are pointers).
type heartbeatSlab struct {
	m                      pb.Message
	typ                    pb.MessageType
	from, to, term, commit uint64
}

// messageSlab holds a decoded message's scalar fields with it.
type messageSlab struct {
	m                                                        pb.Message
	typ                                                      pb.MessageType
	to, from, term, logTerm, index, commit, vote, rejectHint uint64
	reject                                                   bool
}

// entrySlab holds a decoded entry's scalar fields with it.
type entrySlab struct {
	e           pb.Entry
	typ         pb.EntryType
	term, index uint64
}

// field is one field of an encoded message.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64 // varint fields
	b   []byte // length-delimited fields
}

// fields calls fn for each field of b, stopping at the first error.
func fields(b []byte, fn func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// decodeFrame decodes b into f. The frame's structure must be sound (else
// an error); a record that is not is dropped and counted, as is one no
// peer may send (see checkMessage). Decoded data alias b.
func decodeFrame(b []byte, f *inFrame) error {
	f.decoded, f.size = true, len(b)
	nhb, nmsg := 0, 0
	err := fields(b, func(fl field) error {
		switch {
		case fl.num == fFrameLiveness && fl.typ == protowire.VarintType:
			f.liveness = fl.v != 0
		case fl.num == fFrameIncarnation && fl.typ == protowire.VarintType:
			f.incarnation = fl.v
		}
		if fl.typ != protowire.BytesType {
			return nil // not ours: skipped, as an unknown field would be
		}
		switch fl.num {
		case fFrameHandshake:
			hs, err := decodeHandshake(fl.b)
			if err != nil {
				return err
			}
			f.handshake = hs
		case fFrameMessages:
			nmsg++
		case fFrameHeartbeats, fFrameHeartbeatResps:
			nhb++
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.envs = make([]Envelope, 0, nhb+nmsg)
	hbs := make([]heartbeatSlab, nhb)
	_ = fields(b, func(fl field) error {
		switch {
		case fl.typ != protowire.BytesType:
		case fl.num == fFrameHeartbeats || fl.num == fFrameHeartbeatResps:
			t := pb.MsgHeartbeat
			if fl.num == fFrameHeartbeatResps {
				t = pb.MsgHeartbeatResp
			}
			s := &hbs[0]
			hbs = hbs[1:]
			if g, flags, ok := decodeHeartbeat(fl.b, t, s); ok {
				f.envs = append(f.envs, Envelope{GroupID: g, Message: &s.m, Quiesce: flags.quiesce && t == pb.MsgHeartbeat, Wake: flags.wake})
			} else {
				f.badHB++
			}
		}
		return nil
	})
	_ = fields(b, func(fl field) error {
		if fl.typ == protowire.BytesType && fl.num == fFrameMessages {
			g, m := decodeGroupMessage(fl.b)
			if m == nil || checkMessage(g, m) != nil {
				f.badMsg++
			} else {
				f.envs = append(f.envs, Envelope{GroupID: g, Message: m})
			}
		}
		return nil
	})
	return nil
}

func decodeHandshake(b []byte) (*peerpb.Handshake, error) {
	hs := &peerpb.Handshake{}
	err := fields(b, func(fl field) error {
		switch fl.num {
		case fHSCluster:
			hs.ClusterId = fl.v
		case fHSFrom:
			hs.FromNode = fl.v
		case fHSTo:
			hs.ToNode = fl.v
		case fHSVersion:
			hs.ProtocolVersion = uint32(min(fl.v, math.MaxUint32))
		}
		return nil
	})
	return hs, err
}

// heartbeatFlags are a Heartbeat record's flags.
type heartbeatFlags struct{ quiesce, wake bool }

// decodeHeartbeat fills s from a Heartbeat record; ok is false if the
// record is malformed.
func decodeHeartbeat(b []byte, t pb.MessageType, s *heartbeatSlab) (group uint64, flags heartbeatFlags, ok bool) {
	var context []byte
	err := fields(b, func(fl field) error {
		switch fl.num {
		case fHBQuiesce:
			flags.quiesce = fl.v != 0
		case fHBWake:
			flags.wake = fl.v != 0
		case fHBGroup:
			group = fl.v
		case fHBFrom:
			s.from = fl.v
		case fHBTo:
			s.to = fl.v
		case fHBTerm:
			s.term = fl.v
		case fHBCommit:
			s.commit = fl.v
		case fHBContext:
			context = fl.b
		}
		return nil
	})
	if err != nil || group == 0 || s.from == 0 || s.to == 0 {
		return 0, flags, false
	}
	s.typ = t
	s.m.Type, s.m.From, s.m.To, s.m.Term = &s.typ, &s.from, &s.to, &s.term
	if t == pb.MsgHeartbeat {
		s.m.Commit = &s.commit
	}
	if len(context) > 0 {
		s.m.Context = context
	}
	return group, flags, true
}

// decodeGroupMessage decodes a messages record; m is nil if it is
// malformed.
func decodeGroupMessage(b []byte) (group uint64, m *pb.Message) {
	var body []byte
	err := fields(b, func(fl field) error {
		switch {
		case fl.num == fGMGroup && fl.typ == protowire.VarintType:
			group = fl.v
		case fl.num == fGMMessage && fl.typ == protowire.BytesType:
			body = fl.b
		}
		return nil
	})
	if err != nil || body == nil {
		return group, nil
	}
	m, err = decodeMessage(body)
	if err != nil {
		return group, nil
	}
	return group, m
}

// decodeMessage decodes a raftpb.Message.
func decodeMessage(b []byte) (*pb.Message, error) {
	entries := 0
	needGeneric := false
	err := fields(b, func(fl field) error {
		switch fl.num {
		case fMsgEntries:
			if fl.typ == protowire.BytesType {
				entries++
			}
		case fMsgSnapshot, fMsgResponses:
			needGeneric = true
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case needGeneric:
		m := &pb.Message{}
		if err := proto.Unmarshal(b, m); err != nil {
			return nil, err
		}
		return m, nil
	}
	s := &messageSlab{}
	m := &s.m
	var ents []entrySlab
	if entries > 0 {
		ents = make([]entrySlab, entries)
		m.Entries = make([]*pb.Entry, 0, entries)
	}
	err = fields(b, func(fl field) error {
		switch fl.typ {
		case protowire.BytesType:
			switch fl.num {
			case fMsgContext:
				m.Context = fl.b
			case fMsgEntries:
				e := &ents[0]
				ents = ents[1:]
				if err := decodeEntry(fl.b, e); err != nil {
					return err
				}
				m.Entries = append(m.Entries, &e.e)
			}
			return nil
		case protowire.VarintType:
		default:
			return nil // as protobuf does with a field of the wrong type: skipped
		}
		switch fl.num {
		case fMsgType:
			// raft.proto's enums are closed: an unknown value stays unset,
			// as protobuf leaves it.
			if knownMessageType(fl.v) {
				s.typ, m.Type = pb.MessageType(int32(fl.v)), &s.typ
			}
		case fMsgTo:
			s.to, m.To = fl.v, &s.to
		case fMsgFrom:
			s.from, m.From = fl.v, &s.from
		case fMsgTerm:
			s.term, m.Term = fl.v, &s.term
		case fMsgLogTerm:
			s.logTerm, m.LogTerm = fl.v, &s.logTerm
		case fMsgIndex:
			s.index, m.Index = fl.v, &s.index
		case fMsgCommit:
			s.commit, m.Commit = fl.v, &s.commit
		case fMsgVote:
			s.vote, m.Vote = fl.v, &s.vote
		case fMsgRejectHint:
			s.rejectHint, m.RejectHint = fl.v, &s.rejectHint
		case fMsgReject:
			s.reject, m.Reject = protowire.DecodeBool(fl.v), &s.reject
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ownEntryData(m)
	return m, nil
}

// ownEntryData moves a decoded message's entry data out of the frame's
// buffer into one buffer of the message's own: entries live on in the
// entry cache, and one small cached entry must not keep a whole frame of
// other groups' traffic alive beyond the cache's byte budget.
func ownEntryData(m *pb.Message) {
	n := 0
	for _, e := range m.Entries {
		n += len(e.Data)
	}
	if n == 0 {
		return
	}
	buf := make([]byte, 0, n)
	for _, e := range m.Entries {
		if len(e.Data) > 0 {
			start := len(buf)
			buf = append(buf, e.Data...)
			e.Data = buf[start:len(buf):len(buf)]
		}
	}
}

func decodeEntry(b []byte, s *entrySlab) error {
	e := &s.e
	return fields(b, func(fl field) error {
		switch {
		case fl.num == fEntData && fl.typ == protowire.BytesType:
			e.Data = fl.b
		case fl.typ != protowire.VarintType:
		case fl.num == fEntType:
			if _, ok := pb.EntryType_name[int32(fl.v)]; ok && fl.v <= math.MaxInt32 {
				s.typ, e.Type = pb.EntryType(int32(fl.v)), &s.typ
			}
		case fl.num == fEntTerm:
			s.term, e.Term = fl.v, &s.term
		case fl.num == fEntIndex:
			s.index, e.Index = fl.v, &s.index
		}
		return nil
	})
}
