package integration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/internal/testseed"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/transport"
)

// registerInput is an operation on a group seen as a register: a write of
// a unique value (a proposal) or a read (ReadIndex, then the last value the
// replica applied).
type registerInput struct {
	group GroupID
	write bool
	value string
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byGroup := map[GroupID][]porcupine.Operation{}
		for _, op := range history {
			g := op.Input.(registerInput).group
			byGroup[g] = append(byGroup[g], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byGroup {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(registerInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(registerInput)
		if in.write {
			return fmt.Sprintf("g%d write %s", in.group, in.value)
		}
		return fmt.Sprintf("g%d read -> %v", in.group, output)
	},
}

// TestLinearizability runs writers and readers against several groups
// while the network drops, delays and partitions messages at random, and
// checks every group's history with porcupine (invariant 8). Writes whose
// outcome is unknown count as possibly taking effect at any time after
// they began.
func TestLinearizability(t *testing.T) {
	testseed.Run(t, []uint64{1, 2}, func(t *testing.T, seed uint64) { testLinearizability(t, seed, false) })
}

// TestLinearizabilityRetention is TestLinearizability on partition logs
// trimmed all along by a small retention: a write appends a record, a
// read is the last record after ReadIndex.
func TestLinearizabilityRetention(t *testing.T) {
	testseed.Run(t, []uint64{1, 2}, func(t *testing.T, seed uint64) { testLinearizability(t, seed, true) })
}

func testLinearizability(t *testing.T, seed uint64, partitions bool) {
	const groups, clients, ops = 4, 3, 25
	var c *Cluster
	var ids []GroupID
	write := func(ctx context.Context, h *multiraft.Host, g GroupID, value string) error {
		_, err := h.Propose(ctx, g, []byte(value))
		return err
	}
	read := func(node NodeID, g GroupID) string {
		log := c.SM(node, g).Log()
		if len(log) == 0 {
			return ""
		}
		return string(log[len(log)-1])
	}
	if partitions {
		c = partitionCluster(t, 3, func(cfg *multiraft.Config) { cfg.SnapshotEntries, cfg.LogTailEntries = 16, 4 })
		ids = c.CreateGroups(groups)
		c.WaitLeaders(ids)
		retain(t, c, ids, partition.Retention{Bytes: 60, SegmentBytes: 20})
		write = func(ctx context.Context, h *multiraft.Host, g GroupID, value string) error {
			_, err := produce(ctx, h, g, value)
			return err
		}
		read = func(node NodeID, g GroupID) string {
			l := partitionLog(c, node, g)
			hw, err := l.HighWatermark()
			if err != nil || hw == 0 {
				return ""
			}
			recs, _, err := l.Fetch(hw-1, 1, 1<<20)
			if err != nil || len(recs) != 1 {
				t.Errorf("group %d node %d: the last record: %v", g, node, err)
				return ""
			}
			return string(recs[0])
		}
	} else {
		c = NewCluster(t, ClusterConfig{Nodes: 3})
		ids = c.CreateGroups(groups)
	}

	ctx, stop := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // time moves on by itself
		defer bg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			<-tick.C
			c.Clock.Advance(c.TickInterval / 2)
		}
	}()
	go func() { // faults, on a schedule drawn from the seed
		defer bg.Done()
		rng := rand.New(rand.NewPCG(seed, 5))
		var mu sync.Mutex
		drop := rand.New(rand.NewPCG(seed, 6))
		var remove func()
		tick := time.NewTicker(15 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			<-tick.C
			if remove != nil {
				remove()
				remove = nil
			}
			switch rng.IntN(5) {
			case 0:
				remove = c.Net.AddFilter(transport.Isolate(1 + rng.Uint64N(3)))
			case 1:
				p := rng.Float64() / 3
				remove = c.Net.AddFilter(func(_, _ transport.NodeID, _ transport.Envelope) transport.Verdict {
					mu.Lock()
					defer mu.Unlock()
					return transport.Verdict{Drop: drop.Float64() < p}
				})
			case 2:
				d := time.Duration(rng.IntN(3000)) * time.Microsecond
				remove = c.Net.AddFilter(func(_, _ transport.NodeID, e transport.Envelope) transport.Verdict {
					if e.Message.GetType() == pb.MsgApp || e.Message.GetType() == pb.MsgAppResp {
						return transport.Verdict{Delay: d}
					}
					return transport.Deliver
				})
			}
		}
		if remove != nil {
			remove()
		}
	}()

	var mu sync.Mutex
	var history []porcupine.Operation
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, g := range ids {
		for cl := 0; cl < clients; cl++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(g)*100+uint64(cl)))
				client := int(g)*clients + cl
				for i := 0; i < ops; i++ {
					opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
					call := time.Now().UnixNano()
					if rng.IntN(2) == 0 {
						value := fmt.Sprintf("c%d-%d", client, i)
						h := c.Host(c.Leader(g))
						if h == nil {
							cancel()
							continue
						}
						err := write(opCtx, h, g, value)
						in := registerInput{group: g, write: true, value: value}
						switch {
						case err == nil:
							record(porcupine.Operation{ClientId: client, Input: in, Call: call, Return: time.Now().UnixNano()})
						case errors.Is(err, multiraft.ErrAmbiguous):
							record(porcupine.Operation{ClientId: client, Input: in, Call: call, Return: math.MaxInt64})
						}
					} else {
						node := NodeID(1 + rng.Uint64N(3))
						if err := c.Host(node).ReadIndex(opCtx, g); err == nil {
							out := read(node, g)
							record(porcupine.Operation{ClientId: client, Input: registerInput{group: g}, Call: call, Output: out, Return: time.Now().UnixNano()})
						}
					}
					cancel()
				}
			}()
		}
	}
	wg.Wait()
	stop()
	bg.Wait()
	c.Net.ClearFilters()

	writes, reads := 0, 0
	for _, op := range history {
		if op.Input.(registerInput).write {
			writes++
		} else {
			reads++
		}
	}
	t.Logf("%d writes and %d reads recorded", writes, reads)
	if writes == 0 || reads == 0 {
		t.Fatal("the faults left nothing to check")
	}
	if partitions {
		trimmed := false
		for _, g := range ids {
			for _, node := range []NodeID{1, 2, 3} {
				if l := partitionLog(c, node, g); l != nil {
					b, err := l.Bounds()
					trimmed = trimmed || (err == nil && b.Start > 0)
				}
			}
		}
		if !trimmed {
			t.Fatal("retention never trimmed a partition: the test proves nothing about it")
		}
	}
	res := porcupine.CheckOperationsTimeout(registerModel, history, time.Minute)
	if res == porcupine.Illegal {
		t.Fatal("a group's history is not linearizable")
	}
	if res == porcupine.Unknown {
		t.Fatal("the linearizability check timed out")
	}
}
