package multiraft_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// windowSM is an on-disk state machine that copies nothing: it records the
// last index it applied and reads its commands back from the Raft log
// (LogReader), keeping a window of the last retainWindow entries
// (LogRetainer), like the partition log does with retention.
type windowSM struct{ r multiraft.Reader }

const retainWindow = 12

var lastKey = []byte("last")

func (s *windowSM) Apply(w multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	w.Set(lastKey, binary.BigEndian.AppendUint64(nil, cmds[len(cmds)-1].Index))
	return make([][]byte, len(cmds)), nil
}

func (s *windowSM) last() uint64 {
	v, ok, err := s.r.Get(lastKey)
	if err != nil || !ok || len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (s *windowSM) RetainFrom() uint64 {
	last := s.last()
	if last <= retainWindow {
		return 1
	}
	return last - retainWindow + 1
}

// commands reads the retained commands back.
func (s *windowSM) commands(t *testing.T) (keep, last uint64, out []string) {
	t.Helper()
	last = s.last()
	keep = s.RetainFrom()
	err := s.r.(multiraft.LogReader).ReadCommands(keep, last+1, func(c multiraft.Command) bool {
		out = append(out, fmt.Sprintf("%d:%s", c.Index, c.Data))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return keep, last, out
}

// TestSnapshotFromJoinedLeader: node 4 joins group 1 by a snapshot
// that carries the retained entries (below its truncation), becomes the
// leader, and must send a snapshot itself to node 5: node 5 reads back the
// same retained commands as the founders.
func TestSnapshotFromJoinedLeader(t *testing.T) {
	var mu sync.Mutex
	sms := map[multiraft.NodeID]*windowSM{}
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 5,
		DiskStateMachine: func(node flotillatest.NodeID, _ flotillatest.GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
			sm := &windowSM{r: r}
			mu.Lock()
			sms[node] = sm
			mu.Unlock()
			return sm
		},
		Configure: func(cfg *multiraft.Config) { cfg.SnapshotEntries, cfg.LogTailEntries = 4, 1 },
	})
	sm := func(n multiraft.NodeID) *windowSM { mu.Lock(); defer mu.Unlock(); return sms[n] }
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for i := range 40 {
		propose(t, c, g, fmt.Sprintf("a%d", i))
	}
	join := func(node multiraft.NodeID, via multiraft.NodeID) {
		t.Helper()
		addOn(t, c, g, node)
		c.WaitFor(fmt.Sprintf("node %d to catch up", node), time.Minute, func() bool {
			s, l := sm(node), sm(via)
			return s != nil && l != nil && s.last() != 0 && s.last() == l.last()
		})
	}
	leader := c.Leader(g)
	join(4, leader)
	if got := c.Metric(4, "flotilla_store_snapshots_installed_total"); got < 1 {
		t.Fatalf("node 4 installed %v snapshots: it did not join by snapshot", got)
	}
	change(t, c, g, multiraft.Change{Type: multiraft.AddVoter, Node: 4})
	if err := c.Do("moving leadership to node 4", func(ctx context.Context) error {
		return c.Host(c.Leader(g)).TransferLeadership(ctx, g, 4)
	}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("node 4 to lead", time.Minute, func() bool { return c.Leader(g) == 4 })
	for i := range 5 {
		propose(t, c, g, fmt.Sprintf("b%d", i))
	}
	join(5, 4)
	if got := c.Metric(5, "flotilla_store_snapshots_installed_total"); got < 1 {
		t.Fatalf("node 5 installed %v snapshots: it did not join by snapshot", got)
	}
	k1, l1, want := sm(1).commands(t)
	for _, n := range []multiraft.NodeID{4, 5} {
		k, l, got := sm(n).commands(t)
		if k != k1 || l != l1 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("node %d retains [%d, %d] %v; node 1 retains [%d, %d] %v", n, k, l, got, k1, l1, want)
		}
	}
	if len(want) == 0 {
		t.Fatal("nothing retained: the test proves nothing")
	}
}
