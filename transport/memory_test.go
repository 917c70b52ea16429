package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/internal/await"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that keeps what it receives.
type recorder struct {
	mu          sync.Mutex
	got         []Envelope
	unreachable []Envelope
	snapshots   [][]byte
	snapErr     error
}

func (r *recorder) HandleMessages(_ NodeID, batch []Envelope) {
	r.mu.Lock()
	r.got = append(r.got, batch...)
	r.mu.Unlock()
}

func (r *recorder) HandleUnreachable(_ NodeID, dropped []Envelope) {
	r.mu.Lock()
	r.unreachable = append(r.unreachable, dropped...)
	r.mu.Unlock()
}

func (r *recorder) HandleSnapshot(_ NodeID, s *InboundSnapshot) error {
	data, err := io.ReadAll(s.Data)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snapErr != nil {
		return r.snapErr
	}
	r.snapshots = append(r.snapshots, data)
	return nil
}

func (r *recorder) count() (got, unreachable int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got), len(r.unreachable)
}

func msg(group uint64, index uint64, t pb.MessageType) Envelope {
	return Envelope{GroupID: group, Message: &pb.Message{Type: t.Enum(), Index: new(index)}}
}

func startNodes(t *testing.T, net *Network, cfg MemoryConfig, ids ...NodeID) (map[NodeID]*Memory, map[NodeID]*recorder) {
	ts, rs := map[NodeID]*Memory{}, map[NodeID]*recorder{}
	for _, id := range ids {
		ts[id], rs[id] = NewMemory(net, id, cfg), &recorder{}
		if err := ts[id].Start(rs[id]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ts[id].Close() })
	}
	return ts, rs
}

// TestMemoryOrderAndBatching: messages of many groups to one peer arrive
// in the order sent, in far fewer deliveries than messages.
func TestMemoryOrderAndBatching(t *testing.T) {
	net := NewNetwork()
	ts, rs := startNodes(t, net, MemoryConfig{}, 1, 2)
	const groups, per = 100, 50
	for i := uint64(0); i < per; i++ {
		var batch []Envelope
		for g := uint64(1); g <= groups; g++ {
			batch = append(batch, msg(g, i, pb.MsgApp))
		}
		ts[1].Send(2, batch)
	}
	waitUntil(t, "every message", func() bool { got, _ := rs[2].count(); return got == groups*per })
	next := map[uint64]uint64{}
	for _, e := range rs[2].got {
		if e.Message.GetIndex() != next[e.GroupID] {
			t.Fatalf("group %d: got index %d, want %d", e.GroupID, e.Message.GetIndex(), next[e.GroupID])
		}
		next[e.GroupID]++
	}
	if frames := testutil.ToFloat64(ts[1].m.BatchesSent.WithLabelValues("2")); frames > per {
		t.Fatalf("%v deliveries for %d sends of %d groups", frames, per, groups)
	}
}

// TestMemoryFilters: partitions, group and type filters drop; removing a
// filter heals; a message to a node that is not on the network is reported
// unreachable.
func TestMemoryFilters(t *testing.T) {
	net := NewNetwork()
	ts, rs := startNodes(t, net, MemoryConfig{}, 1, 2, 3)
	heal := net.AddFilter(DropBetween(1, 2))
	net.AddFilter(DropGroup(7))
	net.AddFilter(DropType(pb.MsgHeartbeat))
	ts[1].Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
	ts[1].Send(3, []Envelope{msg(1, 1, pb.MsgApp), msg(7, 1, pb.MsgApp), msg(1, 2, pb.MsgHeartbeat)})
	waitUntil(t, "delivery to 3", func() bool { got, _ := rs[3].count(); return got == 1 })
	heal()
	ts[1].Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
	waitUntil(t, "delivery to 2 after healing", func() bool { got, _ := rs[2].count(); return got == 1 })
	if got := rs[2].got[0].Message.GetIndex(); got != 2 {
		t.Fatalf("2 got index %d: the partitioned message leaked", got)
	}
	if dropped := testutil.ToFloat64(ts[1].m.FilterDropped.WithLabelValues("3")); dropped != 2 {
		t.Fatalf("filter drops to 3: %v", dropped)
	}
	ts[1].Send(9, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "unreachable report", func() bool { _, u := rs[1].count(); return u == 1 })
}

// TestMemoryQueueBound: a full peer queue drops, counts, and reports the
// dropped messages unreachable; Send never blocks.
func TestMemoryQueueBound(t *testing.T) {
	net := NewNetwork()
	ts, rs := startNodes(t, net, MemoryConfig{MaxQueueMessages: 10}, 1)
	// One batch larger than the queue: the excess is dropped at once.
	var batch []Envelope
	for i := uint64(0); i < 25; i++ {
		batch = append(batch, msg(1, i, pb.MsgApp))
	}
	ts[1].Send(2, batch)
	if _, u := rs[1].count(); u < 15 {
		t.Fatalf("%d reported unreachable at once, want at least 15", u)
	}
	if d := testutil.ToFloat64(ts[1].m.QueueDropped.WithLabelValues("2")); d != 15 {
		t.Fatalf("queue drops %v, want 15", d)
	}
}

// TestMemoryDelay: a delayed message arrives later; Close drops what is
// still delayed without leaking a timer's goroutine.
func TestMemoryDelay(t *testing.T) {
	net := NewNetwork()
	ts, rs := startNodes(t, net, MemoryConfig{}, 1, 2)
	remove := net.AddFilter(DelayAll(20 * time.Millisecond))
	ts[1].Send(2, []Envelope{msg(1, 1, pb.MsgApp)})
	waitUntil(t, "the delayed message", func() bool { got, _ := rs[2].count(); return got == 1 })
	net.AddFilter(DelayAll(time.Hour))
	remove()
	ts[1].Send(2, []Envelope{msg(1, 2, pb.MsgApp)})
}

// TestMemorySnapshot: a snapshot's data streams whole to the peer; a
// receiver's refusal, a writer's error, a filter and an unknown peer all
// reach done as failures.
func TestMemorySnapshot(t *testing.T) {
	net := NewNetwork()
	ts, rs := startNodes(t, net, MemoryConfig{}, 1, 2)
	data := bytes.Repeat([]byte("snapshot"), 1<<16)
	send := func(to NodeID, write func(io.Writer) error) error {
		res := make(chan error, 1)
		ts[1].SendSnapshot(to, &OutboundSnapshot{GroupID: 5, Message: &pb.Message{Type: pb.MsgSnap.Enum()}, WriteData: write}, func(err error) { res <- err })
		select {
		case err := <-res:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("snapshot send never finished")
			return nil
		}
	}
	writeAll := func(w io.Writer) error { _, err := w.Write(data); return err }
	if err := send(2, writeAll); err != nil {
		t.Fatal(err)
	}
	if len(rs[2].snapshots) != 1 || !bytes.Equal(rs[2].snapshots[0], data) {
		t.Fatal("snapshot data did not arrive whole")
	}
	boom := errors.New("boom")
	if err := send(2, func(w io.Writer) error { _, _ = w.Write(data[:100]); return boom }); !errors.Is(err, boom) {
		t.Fatalf("writer failure: %v", err)
	}
	rs[2].mu.Lock()
	rs[2].snapErr = fmt.Errorf("refused")
	rs[2].mu.Unlock()
	if err := send(2, writeAll); err == nil {
		t.Fatal("a refused snapshot reported success")
	}
	if err := send(9, writeAll); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	net.AddFilter(DropType(pb.MsgSnap))
	if err := send(2, writeAll); !errors.Is(err, ErrDropped) {
		t.Fatalf("filtered snapshot: %v", err)
	}
	if f := testutil.ToFloat64(ts[1].m.SnapshotsFailed.WithLabelValues("2")); f != 3 {
		t.Fatalf("failed snapshots to 2: %v", f)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, 10*time.Second, what, cond)
}
