package transport

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/metrics"
)

// batchOf returns n envelopes over groups groups: appends with one entry
// of payload bytes, and a plain heartbeat for every group.
func batchOf(n, groups, payload int) []Envelope {
	data := make([]byte, payload)
	var out []Envelope
	for i := 0; len(out) < n; i++ {
		g := uint64(i%groups + 1)
		if i < groups {
			out = append(out, heartbeat(g, 10, nil))
			continue
		}
		e := msg(g, uint64(i), pb.MsgApp)
		e.Message.LogTerm, e.Message.Commit = new(uint64(1)), new(uint64(i))
		e.Message.Entries = []*pb.Entry{{Index: new(uint64(i + 1)), Term: new(uint64(1)), Data: data}}
		out = append(out, e)
	}
	return out
}

// packOne packs and encodes the first frame of batch.
func packOne(fr *framer, batch []Envelope) *[]byte {
	var out *[]byte
	fr.pack(batch, func(f *[]byte, _ []Envelope, _ int) bool { out = f; return false })
	return out
}

// BenchmarkFrameEncode: pack a queue of 1,000 messages of 48 groups into a
// frame (heartbeats coalesced) and encode it.
func BenchmarkFrameEncode(b *testing.B) {
	batch := batchOf(1000, 48, 128)
	fr := newFramer(DefaultConfig())
	b.ReportAllocs()
	var bytes int
	for b.Loop() {
		buf := packOne(fr, batch)
		bytes = len(*buf)
		fr.pool.Put(buf) // as gRPC does once the frame is on the wire
	}
	b.ReportMetric(float64(len(batch))*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(bytes), "frame-bytes")
}

// BenchmarkFrameDecode: decode such a frame and unpack it into envelopes.
func BenchmarkFrameDecode(b *testing.B) {
	batch := batchOf(1000, 48, 128)
	buf := *packOne(newFramer(DefaultConfig()), batch)
	b.ReportAllocs()
	for b.Loop() {
		var f inFrame
		if err := decodeFrame(buf, &f); err != nil {
			b.Fatal(err)
		}
		if len(f.envs) != len(batch) {
			b.Fatalf("%d envelopes", len(f.envs))
		}
	}
	b.ReportMetric(float64(len(batch))*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkHeartbeatCoalesce: 10,000 groups' heartbeats packed, encoded,
// decoded and unpacked: the cost of one idle flush to one peer.
func BenchmarkHeartbeatCoalesce(b *testing.B) {
	var batch []Envelope
	for g := uint64(1); g <= 10000; g++ {
		batch = append(batch, heartbeat(g, g, nil))
	}
	fr := newFramer(Config{MaxFrameMessages: 1 << 20, MaxFrameBytes: 1 << 30})
	b.ReportAllocs()
	var size int
	for b.Loop() {
		buf := packOne(fr, batch)
		size = len(*buf)
		var f inFrame
		if err := decodeFrame(*buf, &f); err != nil || len(f.envs) != len(batch) {
			b.Fatalf("%d of %d heartbeats: %v", len(f.envs), len(batch), err)
		}
	}
	b.ReportMetric(float64(size)/float64(len(batch)), "bytes/heartbeat")
}

// countingHandler counts what it receives and lets a sender wait for a
// count.
type countingHandler struct {
	nopHandler
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

func (h *countingHandler) HandleMessages(_ NodeID, batch []Envelope) {
	h.mu.Lock()
	h.n += len(batch)
	h.mu.Unlock()
	h.cond.Broadcast()
}

func (h *countingHandler) waitFor(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.n < n {
		h.cond.Wait()
	}
}

// BenchmarkLoopback: messages of 100 groups with 128-byte entries from one
// gRPC transport to another over 127.0.0.1, sent in batches of 64 as a
// host's passes would. Reports messages, bytes and frames per second.
func BenchmarkLoopback(b *testing.B) {
	for _, payload := range []int{16, 128, 1024} {
		b.Run(fmt.Sprintf("payload=%d", payload), func(b *testing.B) {
			var ls [2]net.Listener
			addrs := map[NodeID]string{}
			for i := range ls {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				ls[i], addrs[NodeID(i+1)] = l, l.Addr().String()
			}
			m := metrics.NewTransport()
			var ts [2]*GRPC
			hs := [2]*countingHandler{{}, {}}
			for _, h := range hs {
				h.cond = sync.NewCond(&h.mu)
			}
			for i := range ts {
				cfg := GRPCConfig{ClusterID: 1, NodeID: NodeID(i + 1), Listener: ls[i], Peers: addrs}
				if i == 0 {
					cfg.Metrics = m
				}
				t, err := NewGRPC(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := t.Start(hs[i], Env{}); err != nil {
					b.Fatal(err)
				}
				ts[i] = t
				defer t.Close()
			}
			batch := batchOf(64+100, 100, payload)[100:] // appends only
			b.ResetTimer()
			sent := 0
			for sent < b.N {
				// Keep the queue shallow: a host's raft has flow control.
				hs[1].waitFor(sent - 10*len(batch))
				ts[0].Send(2, batch)
				sent += len(batch)
			}
			hs[1].waitFor(sent)
			secs := b.Elapsed().Seconds()
			frames := testutil.ToFloat64(m.FramesSent.WithLabelValues("2"))
			bytes := testutil.ToFloat64(m.BytesSent.WithLabelValues("2"))
			b.ReportMetric(float64(sent)/secs, "msgs/s")
			b.ReportMetric(bytes/secs/1e6, "MB/s")
			b.ReportMetric(frames/secs, "frames/s")
			b.ReportMetric(float64(sent)/frames, "msgs/frame")
		})
	}
}
