package multiraft

import (
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// TestConfStateWellFormed: a snapshot's configuration is refused exactly
// when raft would panic restoring it.
func TestConfStateWellFormed(t *testing.T) {
	for _, cs := range []*pb.ConfState{
		{Voters: []uint64{1, 2, 3}},
		{Voters: []uint64{1, 2}, Learners: []uint64{3}},
		{Voters: []uint64{1, 2, 2}},
		{Voters: []uint64{0, 1, 2}},
		{Voters: []uint64{1, 2}, Learners: []uint64{3, 3}},
		{Voters: []uint64{1, 2}, Learners: []uint64{2}},
		{Voters: []uint64{1, 2}, VotersOutgoing: []uint64{1, 3}, LearnersNext: []uint64{3}},
	} {
		panicked := func() (p bool) {
			rn, err := raft.NewRawNode(&raft.Config{ID: 2, ElectionTick: 10, HeartbeatTick: 1, Storage: raft.NewMemoryStorage(),
				MaxInflightMsgs: 16, AsyncStorageWrites: true})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { p = recover() != nil }()
			_ = rn.Step(&pb.Message{Type: pb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(5)),
				Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(10)), Term: new(uint64(5)), ConfState: cs}}})
			return false
		}()
		if got := confStateWellFormed(cs); got == panicked {
			t.Errorf("confStateWellFormed(%v) = %v, and raft panicked: %v", cs, got, panicked)
		}
	}
}
