package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/internal/await"
	"github.com/flotilla-io/flotilla/metrics"
	"github.com/flotilla-io/flotilla/proto/peerpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that keeps what it receives. While gate is set,
// HandleMessages blocks on it: a slow peer.
type recorder struct {
	mu           sync.Mutex
	got          []Envelope
	calls        int    // HandleAlive calls: frames that arrived
	incarnation  uint64 // the last HandleAlive's
	unreachable  []Envelope
	snapshots    [][]byte
	snapErr      error
	refuseUnread error // refused before reading anything
	gate         chan struct{}
	entered      chan struct{} // signalled (if set) when a call waits at the gate
	onSnapRead   func(n int)   // called as snapshot data is read
	snapReturned atomic.Int64  // HandleSnapshot calls that returned
}

func (r *recorder) HandleMessages(_ NodeID, batch []Envelope) {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	r.mu.Lock()
	r.got = append(r.got, batch...)
	r.mu.Unlock()
}

func (r *recorder) HandleAlive(_ NodeID, incarnation uint64) {
	r.mu.Lock()
	r.calls++
	r.incarnation = incarnation
	r.mu.Unlock()
}

func (r *recorder) HandleUnreachable(_ NodeID, dropped []Envelope) {
	r.mu.Lock()
	r.unreachable = append(r.unreachable, dropped...)
	r.mu.Unlock()
}

func (r *recorder) HandleSnapshot(_ NodeID, s *InboundSnapshot) error {
	defer r.snapReturned.Add(1)
	r.mu.Lock()
	refuse := r.refuseUnread
	r.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		n, err := s.Data.Read(chunk)
		buf.Write(chunk[:n])
		if r.onSnapRead != nil && n > 0 {
			r.onSnapRead(buf.Len())
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snapErr != nil {
		return r.snapErr
	}
	r.snapshots = append(r.snapshots, buf.Bytes())
	return nil
}

func (r *recorder) HandleAdmin(_ context.Context, _ NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	if req.GetRemoveReplica().GetGroupId() == 13 {
		return nil, fmt.Errorf("group 13 is unlucky")
	}
	return &peerpb.AdminResponse{}, nil
}

func (r *recorder) count() (got, unreachable int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got), len(r.unreachable)
}

func (r *recorder) received() []Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Envelope(nil), r.got...)
}

func msg(group uint64, index uint64, t pb.MessageType) Envelope {
	return Envelope{GroupID: group, Message: &pb.Message{Type: t.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(1)), Index: new(index)}}
}

func heartbeat(group, commit uint64, ctx []byte) Envelope {
	return Envelope{GroupID: group, Message: &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)),
		Term: new(uint64(4)), Commit: new(commit), Context: ctx}}
}

// node is one transport under test with its recorder and metrics.
type node struct {
	Transport
	r    *recorder
	m    *metrics.Transport
	addr string
}

const (
	kindMemory = "memory"
	kindGRPC   = "grpc"
)

var kinds = []string{kindMemory, kindGRPC}

// testNet builds transports of one kind that can reach each other.
type testNet struct {
	t       *testing.T
	kind    string
	mem     *Network
	filters *Filters
	addrs   map[NodeID]string
}

func newTestNet(t *testing.T, kind string) *testNet {
	n := &testNet{t: t, kind: kind, mem: NewNetwork(), addrs: map[NodeID]string{}}
	n.filters = n.mem.Filters
	return n
}

// listen reserves an address for each node, so every peer map is complete.
func (n *testNet) listen(ids ...NodeID) map[NodeID]net.Listener {
	ls := map[NodeID]net.Listener{}
	for _, id := range ids {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			n.t.Fatal(err)
		}
		ls[id], n.addrs[id] = l, l.Addr().String()
	}
	return ls
}

// start starts nodes with cfg (grpcCfg adjusts the gRPC config).
func (n *testNet) start(cfg Config, grpcCfg func(*GRPCConfig), ids ...NodeID) map[NodeID]*node {
	ls := map[NodeID]net.Listener{}
	if n.kind == kindGRPC {
		ls = n.listen(ids...)
	}
	nodes := map[NodeID]*node{}
	for _, id := range ids {
		nodes[id] = n.startOne(id, cfg, grpcCfg, ls[id])
	}
	return nodes
}

func (n *testNet) startOne(id NodeID, cfg Config, grpcCfg func(*GRPCConfig), l net.Listener) *node {
	n.t.Helper()
	cfg.Metrics = metrics.NewTransport()
	cfg.Filters = n.filters
	nd := &node{r: &recorder{}, m: cfg.Metrics}
	switch n.kind {
	case kindMemory:
		nd.Transport = NewMemory(n.mem, id, cfg)
	case kindGRPC:
		gc := GRPCConfig{Config: cfg, ClusterID: 7, NodeID: id, Listener: l, Peers: n.addrs}
		if l == nil {
			gc.ListenAddr = n.addrs[id]
		}
		if grpcCfg != nil {
			grpcCfg(&gc)
		}
		g, err := NewGRPC(gc)
		if err != nil {
			n.t.Fatal(err)
		}
		nd.Transport, nd.addr = g, g.Addr()
	}
	if err := nd.Start(nd.r, Env{}); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = nd.Close() })
	return nd
}

func forEachKind(t *testing.T, f func(t *testing.T, n *testNet)) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { f(t, newTestNet(t, kind)) })
	}
}

// TestOrderAndBatching: messages of many groups to one peer arrive in the
// order sent, in far fewer frames than messages.
func TestOrderAndBatching(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{}, nil, 1, 2)
		const groups, per = 100, 50
		for i := uint64(0); i < per; i++ {
			var batch []Envelope
			for g := uint64(1); g <= groups; g++ {
				batch = append(batch, msg(g, i, pb.MsgApp))
			}
			ns[1].Send(2, batch)
		}
		waitUntil(t, "every message", func() bool { got, _ := ns[2].r.count(); return got == groups*per })
		next := map[uint64]uint64{}
		for _, e := range ns[2].r.received() {
			if e.Message.GetIndex() != next[e.GroupID] {
				t.Fatalf("group %d: got index %d, want %d", e.GroupID, e.Message.GetIndex(), next[e.GroupID])
			}
			next[e.GroupID]++
		}
		// The sender counts a frame once its send returns, which may be
		// after the receiver has handled it.
		var frames float64
		waitUntil(t, "as many frames counted sent as received", func() bool {
			frames = testutil.ToFloat64(ns[1].m.FramesSent.WithLabelValues("2"))
			return frames == testutil.ToFloat64(ns[2].m.FramesReceived.WithLabelValues("1"))
		})
		if frames > per {
			t.Fatalf("%v frames for %d sends of %d groups' messages", frames, per, groups)
		}
		t.Logf("%d messages in %v frames", groups*per, frames)
	})
}

// TestHeartbeatCoalescing: plain heartbeats wait for the flush (the host's
// tick) and go as one frame for all groups, unchanged, however many more
// than MaxFrameMessages (which bounds messages, not heartbeat records); a
// heartbeat with a ReadIndex context goes at once; a group's heartbeat
// never overtakes its earlier message; two heartbeats of a group are both
// delivered.
func TestHeartbeatCoalescing(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{MaxFrameMessages: 100}, nil, 1, 2)
		var sent []Envelope
		for g := uint64(1); g <= 1000; g++ {
			sent = append(sent, heartbeat(g, g, nil))
		}
		for i := 0; i < len(sent); i += 100 {
			ns[1].Send(2, sent[i:i+100])
		}
		// Nothing woke the sender: the heartbeats wait in the queue.
		if q := testutil.ToFloat64(ns[1].m.QueueHeartbeats.WithLabelValues("2")); q != 1000 {
			t.Fatalf("%v heartbeats waiting, want 1000", q)
		}
		if f := testutil.ToFloat64(ns[1].m.FramesSent.WithLabelValues("2")); f != 0 {
			t.Fatalf("%v frames sent before the flush", f)
		}
		ns[1].Flush()
		waitUntil(t, "the flushed heartbeats", func() bool { got, _ := ns[2].r.count(); return got == 1000 })
		// The sender counts once its send returns, maybe after delivery;
		// the coalesced count is the last it updates.
		waitUntil(t, "the frame counted", func() bool {
			return testutil.ToFloat64(ns[1].m.HeartbeatsCoalesced.WithLabelValues("2")) > 0
		})
		if f := testutil.ToFloat64(ns[1].m.FramesSent.WithLabelValues("2")); f != 1 {
			t.Fatalf("1,000 heartbeats took %v frames, want 1", f)
		}
		if c := testutil.ToFloat64(ns[1].m.HeartbeatsCoalesced.WithLabelValues("2")); c != 1000 {
			t.Fatalf("%v heartbeats coalesced, want 1000", c)
		}
		for i, e := range ns[2].r.received() {
			if e.GroupID != sent[i].GroupID || !proto.Equal(e.Message, sent[i].Message) {
				t.Fatalf("heartbeat %d changed on the way: sent %v, got %v", i, sent[i].Message, e.Message)
			}
		}

		// A ReadIndex heartbeat goes with the next batch, not the next flush.
		read := heartbeat(5, 9, []byte("read-1"))
		ns[1].Send(2, []Envelope{read})
		waitUntil(t, "the ReadIndex heartbeat", func() bool { got, _ := ns[2].r.count(); return got == 1001 })
		if got := ns[2].r.received()[1000]; !proto.Equal(got.Message, read.Message) {
			t.Fatalf("ReadIndex heartbeat arrived as %v", got.Message)
		}

		// Order within a group: heartbeats keep theirs, and travel apart
		// from appends (the control lane's own stream), so either may
		// arrive first; none is merged or lost.
		resp := Envelope{GroupID: 8, Message: &pb.Message{Type: pb.MsgHeartbeatResp.Enum(), From: new(uint64(2)), To: new(uint64(1)),
			Term: new(uint64(4)), Context: []byte("read-2")}}
		batch := []Envelope{
			heartbeat(7, 1, nil), msg(7, 1, pb.MsgApp),
			msg(6, 1, pb.MsgApp), heartbeat(6, 2, []byte("r")),
			heartbeat(9, 3, nil), heartbeat(9, 4, nil), resp,
		}
		ns[1].Send(2, batch)
		waitUntil(t, "the mixed batch", func() bool { got, _ := ns[2].r.count(); return got == 1001+len(batch) })
		pos := map[string]int{}
		for i, e := range ns[2].r.received()[1001:] {
			pos[fmt.Sprintf("%d/%s/%d/%d", e.GroupID, e.Message.GetType(), e.Message.GetIndex(), e.Message.GetCommit())] = i
		}
		order := func(a, b string) {
			ia, oka := pos[a]
			ib, okb := pos[b]
			if !oka || !okb || ia > ib {
				t.Fatalf("want %s before %s, got positions %v", a, b, pos)
			}
		}
		order("7/MsgHeartbeat/0/1", "6/MsgHeartbeat/0/2")
		order("7/MsgApp/1/0", "6/MsgApp/1/0")
		order("9/MsgHeartbeat/0/3", "9/MsgHeartbeat/0/4")
		if _, ok := pos["8/MsgHeartbeatResp/0/0"]; !ok {
			t.Fatalf("heartbeat response lost: %v", pos)
		}
	})
}

// TestControlLane: a heartbeat and a vote pushed after a full queue of
// appends reach the peer while those appends are still held up: the
// control lane has its own sender and stream, so neither the queue, nor
// a frame, nor a peer that stopped taking appends delays it; and a full
// data lane drops appends only.
func TestControlLane(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{MaxQueueMessages: 64, MaxFrameMessages: 4}, nil, 1, 2)
		gate, entered := make(chan struct{}), make(chan struct{}, 1)
		ns[2].r.mu.Lock()
		ns[2].r.gate, ns[2].r.entered = gate, entered
		ns[2].r.mu.Unlock()
		defer func() {
			select {
			case <-gate:
			default:
				close(gate)
			}
		}()
		ns[1].Send(2, []Envelope{msg(1, 0, pb.MsgApp)})
		<-entered // the peer holds that append: the data stream is stuck
		ns[2].r.mu.Lock()
		ns[2].r.gate = nil // only the stuck call waits
		ns[2].r.mu.Unlock()
		var apps []Envelope
		for i := uint64(1); i <= 65; i++ {
			apps = append(apps, msg(1, i, pb.MsgApp))
		}
		ns[1].Send(2, apps)
		vote := Envelope{GroupID: 2, Message: &pb.Message{Type: pb.MsgVote.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(9))}}
		ns[1].Send(2, []Envelope{heartbeat(3, 1, nil), vote})
		ns[1].Flush()
		if d := testutil.ToFloat64(ns[1].m.QueueDropped.WithLabelValues("2")); d != 1 {
			t.Fatalf("%v messages dropped, want the one append over the bound: the full data lane took control messages with it", d)
		}
		waitUntil(t, "the heartbeat and the vote", func() bool { got, _ := ns[2].r.count(); return got == 2 })
		var order []string
		for _, e := range ns[2].r.received() {
			order = append(order, fmt.Sprintf("%d/%s", e.GroupID, e.Message.GetType()))
		}
		if want := []string{"3/MsgHeartbeat", "2/MsgVote"}; fmt.Sprint(order) != fmt.Sprint(want) {
			t.Fatalf("arrived %v while the appends were held, want %v", order, want)
		}
		close(gate)
		waitUntil(t, "everything queued", func() bool { got, _ := ns[2].r.count(); return got == 2+1+64 })
	})
}

// TestLivenessRecords: a peer that nothing went to since the last flush
// gets a liveness record at the next (an empty batch to its handler);
// one that had traffic does not; a filter that cuts the sender off drops
// them as it drops messages.
func TestLivenessRecords(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{}, nil, 1, 2)
		ns[1].Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
		waitUntil(t, "the append", func() bool { got, _ := ns[2].r.count(); return got == 1 })
		live := func(from, to NodeID) float64 {
			return testutil.ToFloat64(ns[to].m.LivenessReceived.WithLabelValues(fmt.Sprint(from)))
		}
		ns[1].Flush() // the append went since the last flush: no record
		if s := testutil.ToFloat64(ns[1].m.LivenessSent.WithLabelValues("2")); s != 0 {
			t.Fatalf("%v liveness records sent with traffic", s)
		}
		ns[1].Flush()
		waitUntil(t, "a liveness record", func() bool { return live(1, 2) == 1 })
		// Node 2 heard from 1, so it keeps 1 informed too.
		ns[2].Flush()
		waitUntil(t, "a liveness record back", func() bool { return live(2, 1) == 1 })
		if got, _ := ns[2].r.count(); got != 1 {
			t.Fatalf("liveness delivered %d messages", got)
		}
		calls := func() int { ns[2].r.mu.Lock(); defer ns[2].r.mu.Unlock(); return ns[2].r.calls }
		before := calls()
		ns[1].Flush()
		waitUntil(t, "the record handed over", func() bool { return calls() == before+1 })
		heal := n.filters.AddFilter(Isolate(1))
		ns[1].Flush()
		waitUntil(t, "a record sent", func() bool { return testutil.ToFloat64(ns[1].m.LivenessSent.WithLabelValues("2")) == 3 })
		waitUntil(t, "the record filtered", func() bool { return testutil.ToFloat64(ns[2].m.FilterDropped.WithLabelValues("1")) >= 1 })
		heal()
		if got := calls(); got != before+1 {
			t.Fatalf("a cut-off sender's liveness record reached the handler")
		}
	})
}

// TestSlowPeerDrops: a peer that stops reading fills the send queue; what
// does not fit is dropped, counted and reported unreachable, and Send
// never blocks. Everything else arrives once the peer reads again.
func TestSlowPeerDrops(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{MaxQueueBytes: 1 << 20, MaxFrameBytes: 256 << 10}, nil, 1, 2)
		gate := make(chan struct{})
		ns[2].r.mu.Lock()
		ns[2].r.gate = gate
		ns[2].r.mu.Unlock()
		payload := bytes.Repeat([]byte("x"), 64<<10)
		sent := 0
		waitUntil(t, "drops at the full queue", func() bool {
			e := msg(1, uint64(sent), pb.MsgApp)
			e.Message.Entries = []*pb.Entry{{Data: payload}}
			ns[1].Send(2, []Envelope{e}) // returns even though the peer reads nothing
			sent++
			return testutil.ToFloat64(ns[1].m.QueueDropped.WithLabelValues("2")) >= 10
		})
		close(gate)
		dropped := int(testutil.ToFloat64(ns[1].m.QueueDropped.WithLabelValues("2")))
		waitUntil(t, "every queued message", func() bool {
			got, unreachable := ns[2].r.count()
			_, reported := ns[1].r.count()
			return unreachable == 0 && reported == dropped && got+reported == sent
		})
		t.Logf("%d sent, %d dropped at the queue", sent, dropped)
	})
}

// TestFilters: partitions, group and type filters drop at the sender;
// removing a filter heals; delays deliver late; a message to a node that
// is not there is reported unreachable.
func TestFilters(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{}, nil, 1, 2, 3)
		heal := n.filters.AddFilter(DropBetween(1, 2))
		n.filters.AddFilter(DropGroup(7))
		n.filters.AddFilter(DropType(pb.MsgTimeoutNow))
		ns[1].Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
		ns[1].Send(3, []Envelope{msg(1, 1, pb.MsgApp), msg(7, 1, pb.MsgApp), msg(1, 2, pb.MsgTimeoutNow)})
		waitUntil(t, "delivery to 3", func() bool { got, _ := ns[3].r.count(); return got == 1 })
		// Drops happen (and count) at the sender, before the wire.
		waitUntil(t, "filter drops to 3", func() bool { return testutil.ToFloat64(ns[1].m.FilterDropped.WithLabelValues("3")) == 2 })
		waitUntil(t, "filter drop to 2", func() bool { return testutil.ToFloat64(ns[1].m.FilterDropped.WithLabelValues("2")) == 1 })
		heal()
		ns[1].Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
		waitUntil(t, "delivery to 2 after healing", func() bool { got, _ := ns[2].r.count(); return got == 1 })
		if got := ns[2].r.received()[0].Message.GetIndex(); got != 2 {
			t.Fatalf("2 got index %d: the partitioned message leaked", got)
		}
		n.filters.ClearFilters()
		remove := n.filters.AddFilter(DelayAll(20 * time.Millisecond))
		ns[1].Send(2, []Envelope{msg(1, 3, pb.MsgApp)})
		waitUntil(t, "the delayed message", func() bool { got, _ := ns[2].r.count(); return got == 2 })
		n.filters.AddFilter(DelayAll(time.Hour)) // Close drops it without leaking its timer
		remove()
		ns[1].Send(2, []Envelope{msg(1, 4, pb.MsgApp)})
		ns[1].Send(9, []Envelope{msg(1, 1, pb.MsgApp)})
		waitUntil(t, "unreachable report", func() bool { _, u := ns[1].r.count(); return u == 1 })
	})
}

// TestQueueBound: one batch larger than the queue: the excess is dropped
// at once, counted, and reported unreachable.
func TestQueueBound(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{MaxQueueMessages: 10}, nil, 1)
		var batch []Envelope
		for i := uint64(0); i < 25; i++ {
			batch = append(batch, msg(1, i, pb.MsgApp))
		}
		ns[1].Send(2, batch)
		if _, u := ns[1].r.count(); u < 15 {
			t.Fatalf("%d reported unreachable at once, want at least 15", u)
		}
		if d := testutil.ToFloat64(ns[1].m.QueueDropped.WithLabelValues("2")); d < 15 {
			t.Fatalf("queue drops %v, want at least 15", d)
		}
	})
}

func snapMsg() *pb.Message {
	return &pb.Message{Type: pb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(3)),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(100)), Term: new(uint64(3))}}}
}

// sendSnapshot sends a snapshot announced at the size write writes.
func sendSnapshot(t *testing.T, from Transport, to NodeID, write func(io.Writer) error) error {
	t.Helper()
	var size countWriter
	_ = write(&size)
	return sendSnapshotSized(t, from, to, int64(max(size, 1)), write)
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// sendSnapshotSized sends a snapshot announced as size bytes.
func sendSnapshotSized(t *testing.T, from Transport, to NodeID, size int64, write func(io.Writer) error) error {
	t.Helper()
	res := make(chan error, 1)
	from.SendSnapshot(to, &OutboundSnapshot{GroupID: 5, Message: snapMsg(), Size: size, WriteData: write}, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("snapshot send never finished")
		return nil
	}
}

// TestSnapshot: a snapshot's data streams whole to the peer; a receiver's
// refusal, a writer's error, a filter and an unknown peer all reach done
// as failures.
func TestSnapshot(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{SnapshotChunkBytes: 64 << 10}, nil, 1, 2)
		data := bytes.Repeat([]byte("snapshot"), 1<<16)
		writeAll := func(w io.Writer) error { _, err := w.Write(data); return err }
		if err := sendSnapshot(t, ns[1], 2, writeAll); err != nil {
			t.Fatal(err)
		}
		if len(ns[2].r.snapshots) != 1 || !bytes.Equal(ns[2].r.snapshots[0], data) {
			t.Fatal("snapshot data did not arrive whole")
		}
		if got := testutil.ToFloat64(ns[2].m.SnapshotBytesRecv.WithLabelValues("1")); got != float64(len(data)) {
			t.Fatalf("%v snapshot bytes received, want %d", got, len(data))
		}
		boom := errors.New("boom")
		if err := sendSnapshot(t, ns[1], 2, func(w io.Writer) error { _, _ = w.Write(data[:100]); return boom }); err == nil {
			t.Fatal("a writer's failure reported success")
		}
		ns[2].r.mu.Lock()
		ns[2].r.snapErr = fmt.Errorf("refused")
		ns[2].r.mu.Unlock()
		if err := sendSnapshot(t, ns[1], 2, writeAll); err == nil {
			t.Fatal("a refused snapshot reported success")
		}
		if err := sendSnapshot(t, ns[1], 9, writeAll); !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("unknown peer: %v", err)
		}
		n.filters.AddFilter(DropType(pb.MsgSnap))
		if err := sendSnapshot(t, ns[1], 2, writeAll); err == nil {
			t.Fatal("a filtered snapshot reported success")
		}
		if f := testutil.ToFloat64(ns[1].m.SnapshotsFailed.WithLabelValues("2")); f != 3 {
			t.Fatalf("failed snapshots to 2: %v", f)
		}
		if len(ns[2].r.snapshots) != 1 {
			t.Fatalf("%d snapshots taken, want 1", len(ns[2].r.snapshots))
		}
		n.filters.ClearFilters()

		// More or less than announced fails the stream.
		ns[2].r.mu.Lock()
		ns[2].r.snapErr = nil
		ns[2].r.mu.Unlock()
		if err := sendSnapshotSized(t, ns[1], 2, int64(len(data)-1), writeAll); err == nil {
			t.Fatal("a snapshot longer than announced was taken")
		}
		if err := sendSnapshotSized(t, ns[1], 2, int64(len(data)+1), writeAll); err == nil {
			t.Fatal("a snapshot shorter than announced was taken")
		}
		// A receiver that refuses before reading gets no data: the
		// writer never runs.
		ns[2].r.mu.Lock()
		ns[2].r.refuseUnread = errors.New("no room")
		ns[2].r.mu.Unlock()
		sent := testutil.ToFloat64(ns[1].m.SnapshotBytesSent.WithLabelValues("2"))
		var wrote atomic.Bool
		err := sendSnapshotSized(t, ns[1], 2, int64(len(data)), func(w io.Writer) error { wrote.Store(true); return writeAll(w) })
		if err == nil || !strings.Contains(err.Error(), "no room") {
			t.Fatalf("refused before reading: %v", err)
		}
		if wrote.Load() || testutil.ToFloat64(ns[1].m.SnapshotBytesSent.WithLabelValues("2")) != sent {
			t.Fatal("data moved for a snapshot refused before its first read")
		}
	})
}

// TestAdmin: control calls reach the peer's handler; its error comes back
// as a refusal; an unknown peer is unreachable.
func TestAdmin(t *testing.T) {
	forEachKind(t, func(t *testing.T, n *testNet) {
		ns := n.start(Config{}, nil, 1, 2)
		ctx := context.Background()
		create := &peerpb.AdminRequest{Request: &peerpb.AdminRequest_CreateReplica{CreateReplica: &peerpb.CreateReplica{GroupId: 4, Members: []uint64{1, 2}}}}
		if _, err := ns[1].Admin(ctx, 2, create); err != nil {
			t.Fatal(err)
		}
		unlucky := &peerpb.AdminRequest{Request: &peerpb.AdminRequest_RemoveReplica{RemoveReplica: &peerpb.RemoveReplica{GroupId: 13}}}
		if _, err := ns[1].Admin(ctx, 2, unlucky); err == nil || (n.kind == kindGRPC && !errors.Is(err, ErrRefused)) {
			t.Fatalf("refused admin call: %v", err)
		}
		if _, err := ns[1].Admin(ctx, 9, create); !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("admin call to an unknown peer: %v", err)
		}
	})
}

// TestMalformedFrames: records no peer may send are dropped and counted.
func TestMalformedFrames(t *testing.T) {
	frame := &peerpb.Frame{
		Messages: []*peerpb.GroupMessage{
			{GroupId: 0, Message: msg(1, 1, pb.MsgApp).Message},
			{GroupId: 1},
			{GroupId: 1, Message: &pb.Message{Type: pb.MsgHup.Enum(), From: new(uint64(1)), To: new(uint64(2))}},
			{GroupId: 1, Message: &pb.Message{Type: pb.MsgStorageAppend.Enum(), From: new(uint64(1)), To: new(uint64(2))}},
			{GroupId: 1, Message: snapMsg()},
			{GroupId: 1, Message: &pb.Message{Type: pb.MessageType(99).Enum(), From: new(uint64(1)), To: new(uint64(2))}},
			{GroupId: 1, Message: &pb.Message{Type: pb.MsgApp.Enum(), To: new(uint64(2))}},
			{GroupId: 3, Message: msg(3, 1, pb.MsgApp).Message},
		},
		Heartbeats: []*peerpb.Heartbeat{{GroupId: 0, From: 1, To: 2}, {GroupId: 2, From: 1, To: 2, Term: 1}},
	}
	var std inFrame
	unpack(frame, &std)
	b, err := proto.Marshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	var own inFrame
	if err := decodeFrame(b, &own); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*inFrame{&std, &own} {
		if bad := in.badHB + in.badMsg; bad != 8 || len(in.envs) != 2 {
			t.Fatalf("%d dropped, %d kept; want 8 and 2", bad, len(in.envs))
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, 20*time.Second, what, cond)
}

// TestQueueBoundSparesHeartbeats: a send queue full of other messages
// still takes heartbeats and responses, up to their own bound: under
// overload appends are dropped (raft resends them), heartbeats are not
// (their loss ends in elections).
func TestQueueBoundSparesHeartbeats(t *testing.T) {
	cfg := Config{MaxQueueMessages: 10, MaxQueueControl: 5}.withDefaults()
	p := newOutbox(2, cfg.Metrics)
	var batch []Envelope
	for i := uint64(0); i < 25; i++ {
		batch = append(batch, msg(1, i, pb.MsgApp))
	}
	for g := uint64(1); g <= 8; g++ {
		batch = append(batch, heartbeat(g, 1, nil))
	}
	dropped := p.push(batch, &cfg)
	var apps, hbs int
	for _, e := range dropped {
		if coalescible(e.Message) {
			hbs++
		} else {
			apps++
		}
	}
	if apps != 15 || hbs != 3 {
		t.Fatalf("dropped %d appends and %d heartbeats; want 15 (over 10) and 3 (over 5)", apps, hbs)
	}
	// What the sender takes leaves room for more of both.
	p.flush()
	if got, _ := p.take(laneControl, nil); len(got) != 5 {
		t.Fatalf("took %d from the control lane, want the 5 heartbeats", len(got))
	}
	if got, _ := p.take(laneData, nil); len(got) != 10 {
		t.Fatalf("took %d from the data lane, want the 10 appends", len(got))
	}
	if dropped := p.push(batch[:1], &cfg); len(dropped) != 0 {
		t.Fatalf("an append after the queue drained was dropped")
	}
}
