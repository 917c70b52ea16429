package transport

import (
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// codecName is the gRPC content subtype of Raft streams
// ("application/grpc+flotilla-frame"). The codec sends frames the framer
// encoded (no second encoding, no second sizing) and decodes them with
// decodeFrame; anything else (the handshake frame, RaftClosed, the
// snapshot and admin calls, which do not name it) takes gRPC's protobuf
// codec. A peer that opens a Raft stream with the standard codec is
// understood too: see inFrame.
const codecName = "flotilla-frame"

func init() { encoding.RegisterCodecV2(frameCodec{}) }

// outFrame is an encoded frame on its way out; the codec hands its buffer
// to gRPC, which returns it to the pool once it is on the wire.
type outFrame struct{ buf *[]byte }

type frameCodec struct{}

func (frameCodec) Name() string { return codecName }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*outFrame); ok {
		return mem.BufferSlice{mem.NewBuffer(f.buf, mem.DefaultBufferPool())}, nil
	}
	return encoding.GetCodecV2(grpcproto.Name).Marshal(v)
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*inFrame); ok {
		// gRPC reuses its buffers once this returns: the frame gets one
		// copy of its own, which the decoded entries alias.
		return decodeFrame(data.Materialize(), f)
	}
	return encoding.GetCodecV2(grpcproto.Name).Unmarshal(data, v)
}
