// Regression tests from a review: each test's comment tells its scenario
// as it failed before the fix.

package multiraft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// Stream tests for the staged-snapshot receive path. Each drives the real
// Host.handleSnapshot (what the transport calls) with a crafted stream for
// a joining replica (replica 2 of group 1 on node 2), as a peer (node 1)
// could send it.

// streamSM is an in-memory state machine whose state is the bytes it was
// restored from.
type streamSM struct{ restored atomic.Int64 }

func (s *streamSM) Apply(cmds []Command) ([][]byte, error) { return make([][]byte, len(cmds)), nil }
func (s *streamSM) Snapshot(w io.Writer) error             { return nil }
func (s *streamSM) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.restored.Store(int64(len(b)))
	return err
}

// streamDiskSM is an on-disk state machine that writes nothing.
type streamDiskSM struct{}

func (streamDiskSM) Apply(_ Writer, cmds []Command) ([][]byte, error) {
	return make([][]byte, len(cmds)), nil
}

type streamHost struct {
	h      *Host
	sm     *streamSM
	failed atomic.Value // error of GroupFailed
}

func newStreamHost(t *testing.T, disk bool) *streamHost {
	t.Helper()
	rh := &streamHost{sm: &streamSM{}}
	net := transport.NewNetwork()
	cfg := DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, 2, "data", vfs.NewMem()
	cfg.Transport = transport.NewMemory(net, 2, transport.Config{})
	if disk {
		cfg.DiskStateMachine = func(GroupID, Reader) DiskStateMachine { return streamDiskSM{} }
	} else {
		cfg.StateMachine = func(GroupID) StateMachine { return rh.sm }
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Events.GroupFailed = func(_ GroupID, err error) { rh.failed.Store(err) }
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if err := h.JoinGroup(1, 2); err != nil {
		t.Fatal(err)
	}
	rh.h = h
	return rh
}

const streamSnapIndex, streamSnapTerm = 10, 5

func streamConfState() *pb.ConfState {
	return &pb.ConfState{Voters: []uint64{1}, Learners: []uint64{2}}
}

func streamSnapMsg() *pb.Message {
	return &pb.Message{Type: pb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(streamSnapTerm)),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(streamSnapIndex)), Term: new(uint64(streamSnapTerm)),
			ConfState: streamConfState()}}}
}

// streamHeader is the stream's header as sendSnapshot writes it.
func streamHeader(t *testing.T) []byte {
	t.Helper()
	a := store.AppliedState{Index: streamSnapIndex, Term: streamSnapTerm, ConfState: streamConfState(),
		Replicas: map[uint64]uint64{1: 1, 2: 2}, NextReplicaID: 3}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// brokenAfter yields data, then fails with err (instead of io.EOF).
type brokenAfter struct {
	r   io.Reader
	err error
}

func (b *brokenAfter) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

// TestTruncatedMemSnapshotRefused: the gRPC transport's reader
// reports a stream that ended before its last chunk as an error wrapping
// io.ErrUnexpectedEOF (chunkReader.Read). memMachine.receive takes any
// ErrUnexpectedEOF as the clean end of the data, so the host stages the
// truncated state, hands the MsgSnap to raft and installs it; the gRPC
// server then answers Aborted ("accepted before its end"), too late.
func TestTruncatedMemSnapshotRefused(t *testing.T) {
	rh := newStreamHost(t, false)
	sent := bytes.Repeat([]byte("s"), 100) // the sender meant 100 more after these
	data := append(streamHeader(t), sent...)
	cut := fmt.Errorf("transport: snapshot stream ended before its last chunk: %w", io.ErrUnexpectedEOF)
	err := rh.h.handleSnapshot(1, &transport.InboundSnapshot{GroupID: 1, Message: streamSnapMsg(), Size: int64(len(data) + 100),
		Data: &brokenAfter{r: bytes.NewReader(data), err: cut}})
	if err == nil {
		t.Fatalf("a snapshot stream that broke before its end was accepted (%d of its %d bytes), to be installed", len(sent), len(sent)+100)
	}
}

// TestLogEntryAboveSnapshotIndexRefused: a stream whose 'e' record names an
// index above the snapshot's passes receive; raft takes the MsgSnap and the
// install refuses the staged table (store.ErrInvalid), which panics the
// group: a bad snapshot fails the replica instead of being dropped.
func TestLogEntryAboveSnapshotIndexRefused(t *testing.T) {
	rh := newStreamHost(t, true)
	data := streamHeader(t)
	data = append(data, 'e')
	data = binary.AppendUvarint(data, streamSnapIndex+1) // above the snapshot
	data = binary.AppendUvarint(data, 1)
	data = append(data, 0) // an entry with no fields: decodes
	err := rh.h.handleSnapshot(1, &transport.InboundSnapshot{GroupID: 1, Message: streamSnapMsg(), Size: int64(len(data)), Data: bytes.NewReader(data)})
	if err == nil {
		t.Fatal("a snapshot keeping an entry above its index was accepted (its install would fail the group)")
	}
	if !errors.Is(err, ErrInvalid) && !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("refused with %v, want an invalid-snapshot error", err)
	}
	// Refused as it arrived: nothing reached the group.
	if failed, _ := rh.failed.Load().(error); failed != nil {
		t.Fatalf("the group failed: %v", failed)
	}
}

// TestRecordLengthBoundedByAnnounced: a record's length prefix makes the
// receiver allocate that much (up to 256 MiB) before any of it arrives,
// whatever size the stream announced: memory per stream is not bounded by
// a chunk nor by the announced size.
func TestRecordLengthBoundedByAnnounced(t *testing.T) {
	rh := newStreamHost(t, true)
	data := streamHeader(t)
	data = append(data, 'k', 1, 'a')
	data = binary.AppendUvarint(data, 200<<20) // a 200 MiB value, announced in a stream of a few bytes
	data = append(data, "xyz"...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := rh.h.handleSnapshot(1, &transport.InboundSnapshot{GroupID: 1, Message: streamSnapMsg(), Size: int64(len(data)), Data: bytes.NewReader(data)})
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a truncated record was accepted")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("receiving a %d-byte stream allocated %d MiB", len(data), grew>>20)
	}
}

// TestLargeKeyArrives: the Writer an on-disk state machine
// writes through takes keys of any size, and the sender streams them; the
// receiver refuses a key over 64 KiB (maxSnapshotKey) as invalid, so a
// group holding one can never add a replica by snapshot (before this change
// it could).
func TestLargeKeyArrives(t *testing.T) {
	rh := newStreamHost(t, true)
	key := bytes.Repeat([]byte("k"), 70<<10)
	data := streamHeader(t)
	data = append(data, 'k')
	data = binary.AppendUvarint(data, uint64(len(key)))
	data = append(data, key...)
	data = binary.AppendUvarint(data, 1)
	data = append(data, 'v')
	err := rh.h.handleSnapshot(1, &transport.InboundSnapshot{GroupID: 1, Message: streamSnapMsg(), Size: int64(len(data)), Data: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("a snapshot with a %d KiB key (which the sender writes) is refused: %v", len(key)>>10, err)
	}
}

// TestStagingReservationNoOverflow: the gRPC server caps an announced
// size at 1<<62; reserveStaging adds before it compares, so while one such
// announcement is counted (between its Add and its undo), a second
// overflows int64 and is reserved. Its countingReader limit is then 1<<62:
// nothing bounds what it writes to the staging directory.
func TestStagingReservationNoOverflow(t *testing.T) {
	rh := newStreamHost(t, true)
	h := rh.h
	h.stagingBytes.Store(1 << 62) // stream A's Add, not yet undone
	if h.reserveStaging(1 << 62) {
		h.stagingBytes.Add(-(1 << 62)) // A's undo
		t.Fatalf("a 1<<62-byte snapshot was reserved against a %d-byte budget (counter now %d)",
			h.cfg.SnapshotStagingBytes, h.stagingBytes.Load())
	}
	h.stagingBytes.Store(0)
}
