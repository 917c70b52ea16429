package multiraft_test

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// ExampleHost_Subscribe: a broker follows which partitions it leads from a
// subscription's channel instead of callbacks on the host's workers. The
// channel is bounded: a reader that falls behind loses events (counted
// by Dropped) and never holds the host up.
func ExampleHost_Subscribe() {
	cfg := multiraft.DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, 1, "data", vfs.NewMem()
	cfg.Transport = transport.NewMemory(transport.NewNetwork(), 1, transport.Config{})
	cfg.StateMachine = func(multiraft.GroupID) multiraft.StateMachine { return &kv{m: map[string]string{}} }
	cfg.TickInterval, cfg.MemTableSize = 10*time.Millisecond, 4<<20
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := multiraft.NewHost(cfg)
	if err != nil {
		panic(err)
	}
	sub := h.Subscribe(64)
	if err := h.CreateGroup(5, []multiraft.NodeID{1}); err != nil {
		panic(err)
	}
	for ev := range sub.Events() {
		switch ev.Kind {
		case multiraft.EventGroupCreated:
			fmt.Println("created group", ev.GroupID)
		case multiraft.EventLeaderChanged:
			fmt.Printf("group %d led here: %v\n", ev.GroupID, ev.Leader.Local)
			if ev.Leader.Local {
				_ = h.Close() // closes the subscription too: the loop ends
			}
		}
	}
	fmt.Println("events lost:", sub.Dropped())
	// Output:
	// created group 5
	// group 5 led here: true
	// events lost: 0
}
