package multiraft_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// counter is an on-disk state machine: its state lives in the host's
// Pebble under the group's keys, written in the same batch as the applied
// index, so a restart neither loses nor repeats a command. Snapshots to
// followers are streamed from Pebble by the host: there is nothing to
// write for them.
type counter struct{ r multiraft.Reader }

var countKey = []byte("count")

func (c *counter) Apply(w multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	n, err := c.count() // sees the previous calls' writes
	if err != nil {
		return nil, err
	}
	results := make([][]byte, len(cmds))
	for i := range cmds {
		n++
		results[i] = binary.BigEndian.AppendUint64(nil, n)
	}
	w.Set(countKey, binary.BigEndian.AppendUint64(nil, n))
	return results, nil
}

func (c *counter) count() (uint64, error) {
	v, found, err := c.r.Get(countKey)
	if err != nil || !found {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// ExampleDiskStateMachine: a group whose state machine keeps its state in
// the host's Pebble, read back after ReadIndex from any goroutine (a
// Reader sees committed batches only, so it cannot see half an Apply).
func ExampleDiskStateMachine() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sm *counter
	cfg := multiraft.DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, 1, "data", vfs.NewMem()
	cfg.Transport = transport.NewMemory(transport.NewNetwork(), 1, transport.Config{})
	cfg.DiskStateMachine = func(_ multiraft.GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
		sm = &counter{r: r}
		return sm
	}
	cfg.TickInterval, cfg.MemTableSize = 10*time.Millisecond, 4<<20
	cfg.Logger = slog.New(slog.DiscardHandler)
	led := make(chan struct{}, 1) // the group serves here: its leader applied an entry of its term
	cfg.Events.LeaderChanged = func(l multiraft.LeaderInfo) {
		if l.Local {
			select { // on a worker: never block
			case led <- struct{}{}:
			default:
			}
		}
	}
	h, err := multiraft.NewHost(cfg)
	if err != nil {
		panic(err)
	}
	defer func() { _ = h.Close() }()
	if err := h.CreateGroup(1, []multiraft.NodeID{1}); err != nil {
		panic(err)
	}
	select {
	case <-led:
	case <-ctx.Done():
		panic(ctx.Err())
	}
	for range 3 {
		res, err := h.Propose(ctx, 1, []byte("+1"))
		if err != nil {
			panic(err)
		}
		fmt.Println("count after the proposal:", binary.BigEndian.Uint64(res.Value))
	}
	if err := h.ReadIndex(ctx, 1); err != nil {
		panic(err)
	}
	n, err := sm.count()
	fmt.Println("read:", n, err)
	// Output:
	// count after the proposal: 1
	// count after the proposal: 2
	// count after the proposal: 3
	// read: 3 <nil>
}
