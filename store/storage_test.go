package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	pb "go.etcd.io/raft/v3/raftpb"
)

// TestStorage walks testdata/storage: transcripts of the store's raft.Storage
// contract, log writer, truncation, snapshot install, lifecycle and
// recovery. Regenerate the expected output with -rewrite after checking it.
//
// Commands (group defaults to 1):
//
//	create [group=] [replica=] [voters=(..)]
//	append lo= hi= term= [hs=(term,vote,commit)]
//	entries lo= hi= [max=]
//	term index=
//	bounds | state | snapshot
//	applied index= term= [voters=(..)]
//	truncate index=
//	install index= term= [voters=(..)] [data=(k=v,..)]
//	get key= | scan
//	remove next=
//	tombstone
//	reopen
func TestStorage(t *testing.T) {
	datadriven.Walk(t, "testdata/storage", func(t *testing.T, path string) {
		fs := vfs.NewMem()
		s := openTest(t, testConfig(fs))
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			groupID := uint64(1)
			d.MaybeScanArgs(t, "group", &groupID)
			if d.Cmd == "reopen" {
				if err := s.Close(); err != nil {
					return "close: " + err.Error()
				}
				s = openTest(t, testConfig(fs))
				return fmt.Sprintf("groups: %v", sortedGroups(s))
			}
			if d.Cmd == "create" {
				replica := uint64(1)
				var voters []uint64
				d.MaybeScanArgs(t, "replica", &replica)
				d.MaybeScanArgs(t, "voters", &voters)
				g, err := s.CreateGroup(groupID, replica, founding(voters...))
				if err != nil {
					return "error: " + err.Error()
				}
				return describeBounds(g)
			}
			if d.Cmd == "tombstone" {
				next, ok := s.Tombstone(groupID)
				return fmt.Sprintf("tombstone: %d %t", next, ok)
			}
			if d.Cmd == "remove" {
				var next uint64
				d.ScanArgs(t, "next", &next)
				if err := s.RemoveGroup(groupID, next); err != nil {
					return "error: " + err.Error()
				}
				return fmt.Sprintf("groups: %v", sortedGroups(s))
			}
			g, ok := s.Group(groupID)
			if !ok {
				return fmt.Sprintf("group %d not found", groupID)
			}
			return runStorageCmd(t, d, g)
		})
	})
}

func runStorageCmd(t *testing.T, d *datadriven.TestData, g *GroupStorage) string {
	u := func(key string) uint64 {
		var v uint64
		d.ScanArgs(t, key, &v)
		return v
	}
	switch d.Cmd {
	case "append":
		var hs *pb.HardState
		if d.HasArg("hs") {
			var v []uint64
			d.ScanArgs(t, "hs", &v)
			hs = hardState(v[0], v[1], v[2])
		}
		var es []*pb.Entry
		if d.HasArg("lo") {
			es = ents(u("lo"), u("hi"), u("term"))
		}
		done := make(chan struct{})
		if err := g.Append(es, hs, func() { close(done) }); err != nil {
			return "error: " + err.Error()
		}
		waitClosed(t, g.s, done)
		return describeBounds(g)
	case "entries":
		maxSize := uint64(1 << 30)
		d.MaybeScanArgs(t, "max", &maxSize)
		es, err := g.Entries(u("lo"), u("hi"), maxSize)
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, e := range es {
			fmt.Fprintf(&b, "%d/%d %s\n", e.GetIndex(), e.GetTerm(), e.GetData())
		}
		return b.String()
	case "term":
		term, err := g.Term(u("index"))
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("term: %d", term)
	case "bounds":
		return describeBounds(g)
	case "state":
		hs, cs, err := g.InitialState()
		if err != nil {
			return "error: " + err.Error()
		}
		a := g.Applied()
		return fmt.Sprintf("hard state: term=%d vote=%d commit=%d\nconf state: voters=%v learners=%v\napplied: %d/%d replicas=%v",
			hs.GetTerm(), hs.GetVote(), hs.GetCommit(), cs.GetVoters(), cs.GetLearners(), a.Index, a.Term, a.Replicas)
	case "snapshot":
		snap, err := g.Snapshot()
		if err != nil {
			return "error: " + err.Error()
		}
		m := snap.GetMetadata()
		return fmt.Sprintf("snapshot: %d/%d voters=%v", m.GetIndex(), m.GetTerm(), m.GetConfState().GetVoters())
	case "applied":
		var voters []uint64
		d.MaybeScanArgs(t, "voters", &voters)
		setApplied(t, g, u("index"), u("term"), &pb.ConfState{Voters: voters})
		return "ok"
	case "truncate":
		done := make(chan struct{})
		if err := g.Truncate(u("index"), func() { close(done) }); err != nil {
			return "error: " + err.Error()
		}
		waitClosed(t, g.s, done)
		return describeBounds(g)
	case "install":
		var voters []uint64
		var data []string
		d.MaybeScanArgs(t, "voters", &voters)
		d.MaybeScanArgs(t, "data", &data)
		applied := AppliedState{Index: u("index"), Term: u("term"), ConfState: &pb.ConfState{Voters: voters}, Replicas: founding(voters...)}
		err := g.InstallSnapshot(context.Background(), applied, nil, func(w *SnapshotWriter) error {
			for _, kv := range data {
				k, v, _ := strings.Cut(kv, "=")
				if err := w.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return describeBounds(g)
	case "get":
		var key string
		d.ScanArgs(t, "key", &key)
		v, ok, err := g.Get([]byte(key))
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("%q found=%t", v, ok)
	case "scan":
		var b strings.Builder
		if err := g.Scan(nil, nil, func(k, v []byte) bool {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
			return true
		}); err != nil {
			return "error: " + err.Error()
		}
		return b.String()
	case "scan-reverse":
		// scan-reverse [start=K] [end=K]: keys in [start, end), last first.
		var start, end []byte
		if d.HasArg("start") {
			var k string
			d.ScanArgs(t, "start", &k)
			start = []byte(k)
		}
		if d.HasArg("end") {
			var k string
			d.ScanArgs(t, "end", &k)
			end = []byte(k)
		}
		var b strings.Builder
		if err := g.ScanReverse(start, end, func(k, v []byte) bool {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
			return true
		}); err != nil {
			return "error: " + err.Error()
		}
		return b.String()
	case "set":
		var kvs []string
		d.ScanArgs(t, "kv", &kvs)
		b := g.NewApplyBatch()
		for _, kv := range kvs {
			k, v, _ := strings.Cut(kv, "=")
			b.Set([]byte(k), []byte(v))
		}
		if d.HasArg("index") {
			b.SetApplied(AppliedState{Index: u("index"), Term: u("term"), ConfState: g.Applied().ConfState})
		}
		if err := b.Commit(); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}

func describeBounds(g *GroupStorage) string {
	first, _ := g.FirstIndex()
	last, _ := g.LastIndex()
	return fmt.Sprintf("first=%d last=%d", first, last)
}

func sortedGroups(s *Store) []uint64 {
	ids := s.Groups()
	slices.Sort(ids)
	return ids
}

// TestSnapshotReader: OpenSnapshot gives the applied state and the data of
// one consistent view, unaffected by writes after it was taken.
func TestSnapshotReader(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	b := g.NewApplyBatch()
	b.Set([]byte("a"), []byte("1"))
	b.Set([]byte("b"), []byte("2"))
	b.SetStateSnapshot(bytes.Repeat([]byte("s"), 3*stateSnapshotChunk+5))
	b.SetApplied(AppliedState{Index: 12, Term: 6, ConfState: &pb.ConfState{Voters: []uint64{1}}})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := g.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b = g.NewApplyBatch()
	b.Set([]byte("c"), []byte("3"))
	b.SetStateSnapshot([]byte("small"))
	b.SetApplied(AppliedState{Index: 13, Term: 6, ConfState: &pb.ConfState{Voters: []uint64{1}}})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if m := r.Metadata(); m.GetIndex() != 12 || m.GetTerm() != 6 {
		t.Fatalf("metadata %v", m)
	}
	var keys []string
	if err := r.Scan(func(k, v []byte) bool { keys = append(keys, string(k)+"="+string(v)); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "a=1,b=2" {
		t.Fatalf("view holds %v", keys)
	}
	if data, err := r.StateSnapshot(); err != nil || len(data) != 3*stateSnapshotChunk+5 {
		t.Fatalf("state snapshot of %d bytes, %v", len(data), err)
	}
	if data, err := g.LoadStateSnapshot(); err != nil || string(data) != "small" {
		t.Fatalf("current state snapshot %q, %v", data, err)
	}
}

// TestEntryCacheMetrics: cached reads count as hits, Pebble reads as misses.
func TestEntryCacheMetrics(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	appendSync(t, g, ents(11, 21, 6), nil)
	if _, err := g.Entries(11, 21, 1<<20); err != nil {
		t.Fatal(err)
	}
	if hits := testutil.ToFloat64(s.m.EntryCacheHits); hits != 1 {
		t.Fatalf("hits %v", hits)
	}
	s.cache.drop(1)
	if _, err := g.Term(15); err != nil {
		t.Fatal(err)
	}
	if misses := testutil.ToFloat64(s.m.EntryCacheMisses); misses != 1 {
		t.Fatalf("misses %v", misses)
	}
	if b := testutil.ToFloat64(s.m.EntryCacheBytes); b != 0 {
		t.Fatalf("cache bytes %v after drop", b)
	}
}
