package store

import (
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestEntryCodec: a stored entry decodes to one proto.Equal to what was
// written, field presence included, and its stored size is exact.
func TestEntryCodec(t *testing.T) {
	for name, e := range map[string]*pb.Entry{
		"full":        ent(42, 7),
		"conf change": {Index: new(uint64(3)), Term: new(uint64(1 << 40)), Type: pb.EntryConfChangeV2.Enum(), Data: []byte("cc")},
		"empty data":  {Index: new(uint64(5)), Term: new(uint64(2)), Data: []byte{}},
		"no data":     {Index: new(uint64(5)), Term: new(uint64(2))},
		"no type":     {Index: new(uint64(9)), Term: new(uint64(300)), Data: []byte("x")},
		"bare":        {},
	} {
		v := appendEntryValue(nil, e)
		if len(v) != encodedEntrySize(e) {
			t.Errorf("%s: encoded %d bytes, size says %d", name, len(v), encodedEntrySize(e))
		}
		got, err := decodeEntry(e.GetIndex(), v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !proto.Equal(got, e) || entrySize(got) != entrySize(e) {
			t.Errorf("%s: decoded %v, want %v", name, got, e)
		}
		if term, err := decodeEntryTerm(v); err != nil || term != e.GetTerm() {
			t.Errorf("%s: term %d, %v", name, term, err)
		}
	}
}

// TestEntryCodecCorrupt: garbage is an ErrCorrupt, never a panic.
func TestEntryCodecCorrupt(t *testing.T) {
	for _, v := range [][]byte{nil, {0xff}, {entryHasType}, {entryHasType, 0x80}, {entryHasType, 9}, {entryHasTerm, 0xff}} {
		if _, err := decodeEntry(1, v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: %v, want ErrCorrupt", v, err)
		}
	}
	for _, v := range [][]byte{nil, make([]byte, 15), make([]byte, 17)} {
		if _, err := decodeTruncatedState(v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated state %x: %v", v, err)
		}
	}
	if _, err := decodeAppliedState([]byte{1, 2}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("applied state: %v", err)
	}
	good, err := AppliedState{Index: 1, Term: 1, Replicas: map[uint64]uint64{1: 7}}.encode()
	if err != nil {
		t.Fatal(err)
	}
	for cut := 16; cut < len(good); cut++ {
		if _, err := decodeAppliedState(good[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("applied state cut at %d: %v", cut, err)
		}
	}
	if _, err := decodeAppliedState(append(good, 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("applied state with a trailing byte: %v", err)
	}
}

func TestAppliedStateCodec(t *testing.T) {
	a := AppliedState{Index: 99, Term: 4,
		ConfState: &pb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{5}, VotersOutgoing: []uint64{1, 3}, AutoLeave: new(true)},
		Replicas:  map[uint64]uint64{1: 10, 2: 20, 3: 30, 5: 50}, NextReplicaID: 6}
	b, err := a.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeAppliedState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != a.Index || got.Term != a.Term || !proto.Equal(got.ConfState, a.ConfState) || fmt.Sprint(got.Replicas) != fmt.Sprint(a.Replicas) || got.NextReplicaID != 6 {
		t.Fatalf("decoded %+v, want %+v", got, a)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntryValue(nil, ent(1, 1)))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeEntry(7, v)
		if err != nil {
			return
		}
		if got := appendEntryValue(nil, e); string(got) != string(v) {
			t.Fatalf("re-encoding %x gives %x", v, got)
		}
	})
}

// TestKeyLayout: a group's keys sort inside its prefix, the replica span
// holds every raft and data key and not the identity keys, and log keys
// sort by index.
func TestKeyLayout(t *testing.T) {
	const g = 0x0102030405060708
	start, end := replicaSpan(g)
	in := func(k []byte) bool { return string(k) >= string(start) && string(k) < string(end) }
	for name, k := range map[string][]byte{
		"hard state": hardStateKey(g), "truncated": truncatedKey(g), "applied": appliedKey(g),
		"log": logKey(g, 1<<63), "data": appendDataKey(nil, g, []byte{0xff, 0xff}), "state snapshot": stateSnapshotKey(g, 3),
	} {
		if !in(k) {
			t.Errorf("%s key %x outside the replica span", name, k)
		}
		if id, ok := groupIDOf(k); !ok || id != g {
			t.Errorf("%s key %x: group %d", name, k, id)
		}
	}
	for name, k := range map[string][]byte{"replica ID": replicaIDKey(g), "tombstone": tombstoneKey(g)} {
		if in(k) {
			t.Errorf("%s key inside the replica span", name)
		}
	}
	if string(logKey(g, 255)) >= string(logKey(g, 256)) {
		t.Error("log keys do not sort by index")
	}
	if string(groupPrefix(g)) >= string(groupPrefix(g+1)) || string(end) > string(groupPrefix(g+1)) {
		t.Error("groups overlap")
	}
	if idx, err := parseLogKey(g, logKey(g, 77)); err != nil || idx != 77 {
		t.Errorf("parseLogKey: %d %v", idx, err)
	}
	if _, err := parseLogKey(g+1, logKey(g, 77)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("parseLogKey of another group: %v", err)
	}
}
