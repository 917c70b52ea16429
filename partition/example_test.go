package partition_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/transport"
)

// Example: a partition log as a group's state machine (what
// partition.Factory makes; here made by hand to keep the log for reads):
// produce records through the group, then fetch them from this replica.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var log *partition.Log
	cfg := multiraft.DefaultConfig()
	cfg.ClusterID, cfg.NodeID, cfg.Dir, cfg.FS = 1, 1, "data", vfs.NewMem()
	cfg.Transport = transport.NewMemory(transport.NewNetwork(), 1, transport.Config{})
	cfg.DiskStateMachine = func(_ multiraft.GroupID, r multiraft.Reader) multiraft.DiskStateMachine {
		log = partition.New(partition.DefaultConfig(), r) // r also reads the Raft log: records are stored once
		return log
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

	produce := &partition.Produce{TimestampMs: uint64(time.Now().UnixMilli()), Records: [][]byte{[]byte("a"), []byte("b"), []byte("c")}}
	res, err := h.Propose(ctx, 1, produce.Marshal())
	if err != nil {
		panic(err)
	}
	r, err := partition.DecodeResult(res.Value)
	fmt.Println("offsets", r.BaseOffset, "to", r.BaseOffset+r.Count-1, err, r.Err)

	records, hw, err := log.Fetch(1, 10, 1<<20)
	fmt.Printf("from offset 1: %q, high watermark %d, %v\n", records, hw, err)
	_, _, err = log.Fetch(9, 10, 1<<20)
	fmt.Println("beyond the high watermark:", err != nil)
	// Output:
	// offsets 0 to 2 <nil> <nil>
	// from offset 1: ["b" "c"], high watermark 3, <nil>
	// beyond the high watermark: true
}
