package multiraft_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// noopSM is an on-disk state machine that does nothing.
type noopSM struct{}

func (noopSM) Apply(_ multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	return make([][]byte, len(cmds)), nil
}

// BenchmarkPropose: the proposal path on one host (a one-replica group on
// an in-memory disk, so no fsync waits, and a state machine that does
// nothing), 64 proposers at once: what a proposal costs the host to take,
// pack, append, apply and answer.
func BenchmarkPropose(b *testing.B) {
	c := flotillatest.NewCluster(b, flotillatest.Config{Nodes: 1,
		DiskStateMachine: func(multiraft.NodeID, multiraft.GroupID, multiraft.Reader) multiraft.DiskStateMachine {
			return noopSM{}
		}})
	c.CreateGroup(1, 1)
	c.WaitLeaders([]multiraft.GroupID{1})
	h := c.Host(1)
	data := make([]byte, 16)
	b.SetParallelism(32) // 64 proposers on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Propose(context.Background(), 1, data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkProposeReplicated: the whole write path of write-48 without
// the disk: three hosts over gRPC on loopback, 48 groups of three
// replicas with their leaders spread, 512 proposers of 16 bytes. What a
// proposal costs the three hosts together: take, pack, append, replicate,
// commit, apply and answer.
func BenchmarkProposeReplicated(b *testing.B) {
	c := flotillatest.NewCluster(b, flotillatest.Config{Nodes: 3, Transport: flotillatest.GRPC,
		DiskStateMachine: func(multiraft.NodeID, multiraft.GroupID, multiraft.Reader) multiraft.DiskStateMachine {
			return noopSM{}
		}})
	ids := c.CreateGroups(48)
	c.SpreadLeaders(ids)
	data := make([]byte, 16)
	var next atomic.Uint64
	b.SetParallelism(256) // 512 proposers on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := ids[next.Add(1)%uint64(len(ids))]
		var h *multiraft.Host
		for pb.Next() {
			for {
				if h == nil {
					if h = c.Host(c.Leader(g)); h == nil {
						runtime.Gosched()
						continue
					}
				}
				_, err := h.Propose(context.Background(), g, data)
				if err == nil {
					break
				}
				if !errors.Is(err, multiraft.ErrNotLeader) && !errors.Is(err, multiraft.ErrBusy) {
					b.Error(err)
					return
				}
				h = nil
			}
		}
	})
}
