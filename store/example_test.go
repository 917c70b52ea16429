package store_test

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/store"
)

// Example: the store underneath a host, used directly: one Pebble for
// every group; a group's appends go through the shared log writer (one
// fsync for many groups) and complete once durable. A multiraft host does
// all of this itself; this is for reading the storage layer.
func Example() {
	cfg := store.DefaultConfig("data")
	cfg.FS, cfg.MemTableSize = vfs.NewMem(), 4<<20
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := store.Open(cfg)
	if err != nil {
		panic(err)
	}
	defer func() { _ = s.Close() }()
	g, err := s.CreateGroup(7, 1, map[uint64]uint64{1: 1}) // group 7, replica 1 on node 1
	if err != nil {
		panic(err)
	}
	first, _ := g.FirstIndex() // a new group's log starts past a founding snapshot
	durable := make(chan struct{})
	entries := []*pb.Entry{
		{Index: new(first), Term: new(uint64(1)), Data: []byte("first")},
		{Index: new(first + 1), Term: new(uint64(1)), Data: []byte("second")},
	}
	hs := &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(first + 1)}
	if err := g.Append(entries, hs, func() { close(durable) }); err != nil {
		panic(err)
	}
	<-durable // synced: only now may a host let an answer leave
	last, _ := g.LastIndex()
	got, err := g.Entries(first, last+1, 1<<20)
	for _, e := range got {
		fmt.Printf("%d: %s\n", e.GetIndex()-first+1, e.GetData())
	}
	fmt.Println(err)
	// Output:
	// 1: first
	// 2: second
	// <nil>
}
