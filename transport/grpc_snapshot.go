package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/proto/peerpb"
)

// Snapshot streams.
//
// A snapshot travels on its own stream, never between Raft frames (a
// snapshot of many megabytes would hold up every group's heartbeats): a
// header chunk with the handshake, the MsgSnap and the data's size, data
// chunks of SnapshotChunkBytes, and a last chunk with the data's length
// and CRC-32C. The sender sends data only once the receiver asked for it,
// which it does when the host first reads: a host without room refuses
// before any data moves. The receiver's reader returns EOF only after the
// last chunk checked out, so the host, which finishes what it staged only
// at EOF, takes a snapshot only when it arrived whole. The stream's status
// is the sender's outcome: OK only once the host accepted it.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// streamSnapshot sends a snapshot on a new stream.
func (t *GRPC) streamSnapshot(ctx context.Context, to NodeID, snap *OutboundSnapshot, write func(io.Writer) error) error {
	cc, err := t.conn(to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := peerpb.NewPeerClient(cc).Snapshot(ctx)
	if err != nil {
		return remoteError(to, err)
	}
	header := &peerpb.SnapshotChunk{Handshake: t.handshake(to), GroupId: snap.GroupID, Message: snap.Message, SizeBytes: uint64(snap.Size)}
	if err := stream.Send(header); err != nil {
		return t.snapshotOutcome(to, stream, err)
	}
	// Wait for the receiver to ask for the data: its refusal (no room)
	// comes as the stream's status instead.
	reply, err := stream.Recv()
	if err != nil {
		return remoteError(to, err)
	}
	if !reply.GetSendData() {
		return fmt.Errorf("%w: node %d answered a snapshot header without asking for its data", ErrRefused, to)
	}
	cw := &chunkWriter{stream: stream, size: t.cfg.SnapshotChunkBytes}
	if err := write(cw); err != nil {
		if cw.err != nil {
			return t.snapshotOutcome(to, stream, cw.err)
		}
		return fmt.Errorf("transport: writing snapshot of group %d: %w", snap.GroupID, err)
	}
	if err := cw.flush(); err != nil {
		return t.snapshotOutcome(to, stream, err)
	}
	if err := stream.Send(&peerpb.SnapshotChunk{Last: true, TotalBytes: cw.total, Crc32C: cw.crc}); err != nil {
		return t.snapshotOutcome(to, stream, err)
	}
	return t.snapshotOutcome(to, stream, nil)
}

// snapshotOutcome closes the sending side and returns the receiver's
// verdict (a send error that is only io.EOF means the receiver ended the
// stream early: its status says why).
func (t *GRPC) snapshotOutcome(to NodeID, stream peerpb.Peer_SnapshotClient, sendErr error) error {
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return remoteError(to, sendErr)
	}
	if err := stream.CloseSend(); err != nil && sendErr == nil {
		return remoteError(to, err)
	}
	for {
		reply, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: node %d ended the snapshot stream without accepting it", ErrRefused, to)
		case err != nil:
			return remoteError(to, err)
		case reply.GetAccepted():
			if sendErr != nil {
				return fmt.Errorf("%w: node %d ended the snapshot stream early", ErrRefused, to)
			}
			return nil
		}
	}
}

// chunkWriter cuts the data into chunks and keeps the checksum.
type chunkWriter struct {
	stream peerpb.Peer_SnapshotClient
	size   int
	buf    []byte
	total  uint64
	crc    uint32
	err    error // the stream's error, if a send failed
}

func (w *chunkWriter) Write(b []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(b)
	w.total += uint64(n)
	w.crc = crc32.Update(w.crc, castagnoli, b)
	for len(b) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, w.size)
		}
		k := min(len(b), w.size-len(w.buf))
		w.buf = append(w.buf, b[:k]...)
		b = b[k:]
		if len(w.buf) == w.size {
			if err := w.flush(); err != nil {
				return n - len(b), err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 || w.err != nil {
		return w.err
	}
	w.err = w.stream.Send(&peerpb.SnapshotChunk{Data: w.buf})
	w.buf = nil // the chunk is the stream's now
	return w.err
}

// Snapshot receives a snapshot stream and hands it to the host.
func (s *peerServer) Snapshot(stream peerpb.Peer_SnapshotServer) error {
	t := s.t
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hs, gen := first.GetHandshake(), t.gen.Load()
	from, err := t.accept(stream.Context(), hs)
	if err != nil {
		return err
	}
	if len(first.GetData()) > 0 || first.GetLast() {
		return status.Error(codes.InvalidArgument, "snapshot header with data")
	}
	// The sender is checked again before each chunk if the peer set or
	// the TLS config changed.
	r := &chunkReader{stream: stream, check: func() error { return t.recheck(stream.Context(), hs, &gen) }}
	size := int64(min(first.GetSizeBytes(), 1<<62))
	err = t.receiveSnapshot(from, &InboundSnapshot{GroupID: first.GetGroupId(), Message: first.GetMessage(), Size: size, Data: r})
	if err != nil {
		return status.Error(codes.Aborted, err.Error())
	}
	if !r.done {
		return status.Error(codes.Aborted, "snapshot accepted before its end")
	}
	return stream.Send(&peerpb.SnapshotReply{Accepted: true})
}

// chunkReader reads a snapshot's data from its chunks; it returns EOF only
// after the last chunk, once length and checksum match. Its first read
// asks the sender for the data.
type chunkReader struct {
	stream peerpb.Peer_SnapshotServer
	check  func() error // nil: none
	asked  bool
	buf    []byte
	total  uint64
	crc    uint32
	done   bool
}

func (r *chunkReader) take(c *peerpb.SnapshotChunk) error {
	r.buf = c.GetData()
	r.total += uint64(len(r.buf))
	r.crc = crc32.Update(r.crc, castagnoli, r.buf)
	if !c.GetLast() {
		return nil
	}
	if c.GetTotalBytes() != r.total || c.GetCrc32C() != r.crc {
		return fmt.Errorf("%w: %d bytes with CRC %08x, sender says %d bytes with %08x",
			ErrChecksum, r.total, r.crc, c.GetTotalBytes(), c.GetCrc32C())
	}
	r.done = true
	return nil
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if r.check != nil {
			if err := r.check(); err != nil {
				return 0, err
			}
		}
		if !r.asked {
			r.asked = true
			if err := r.stream.Send(&peerpb.SnapshotReply{SendData: true}); err != nil {
				return 0, fmt.Errorf("transport: asking for snapshot data: %w", err)
			}
		}
		c, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("transport: snapshot stream ended before its last chunk: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("transport: snapshot stream broke: %w", err)
		}
		if err := r.take(c); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
