package flotillatest_test

import (
	"context"
	"encoding/binary"
	"flag"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter is an embedder's own state machine: the sum of the numbers
// proposed to its group.
type counter struct {
	mu  sync.Mutex
	sum uint64
}

func (c *counter) Apply(cmds []multiraft.Command) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, len(cmds))
	for i, cmd := range cmds {
		c.sum += binary.BigEndian.Uint64(cmd.Data)
		out[i] = binary.BigEndian.AppendUint64(nil, c.sum)
	}
	return out, nil
}

func (c *counter) Snapshot(w io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, c.sum))
	return err
}

func (c *counter) Restore(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	c.mu.Lock()
	c.sum = binary.BigEndian.Uint64(b[:])
	c.mu.Unlock()
	return nil
}

func (c *counter) value() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum
}

// TestKitRunsTheEmbeddersStateMachine: the kit runs hosts with the
// caller's state machine; a crashed node comes back on what its disk
// kept and catches up; the kit registers no flags.
func TestKitRunsTheEmbeddersStateMachine(t *testing.T) {
	if flag.Lookup("transport") != nil {
		t.Fatal("the kit registered a global flag")
	}
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3,
		StateMachine: func(flotillatest.NodeID, flotillatest.GroupID) multiraft.StateMachine { return &counter{} }})
	const g = 1
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]flotillatest.GroupID{g})
	add := func(n uint64) {
		t.Helper()
		if err := c.Do("an addition", func(ctx context.Context) error {
			_, err := c.Host(c.Leader(g)).Propose(ctx, g, binary.BigEndian.AppendUint64(nil, n))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for n := uint64(1); n <= 10; n++ {
		add(n)
	}
	victim := c.Leader(g)%3 + 1
	c.Crash(victim, rand.New(rand.NewPCG(1, 1)))
	add(100)
	c.Restart(victim)
	c.WaitFor("every replica to sum 155", time.Minute, func() bool {
		for _, n := range c.Nodes() {
			sm, _ := c.StateMachine(n, g).(*counter)
			if sm == nil || sm.value() != 155 {
				return false
			}
		}
		return true
	})
	if c.SM(1, g) != nil {
		t.Fatal("SM returned a kit state machine for the embedder's own")
	}
}
