package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// cowSM is a counter that is a Snapshotter: PrepareSnapshot captures the
// count, and the write (held until release is closed, if set) writes the
// captured count, however many commands applied since.
type cowSM struct {
	n        int // worker only
	mu       sync.Mutex
	prepared []multiraft.SnapshotMeta
	restored []int
	release  chan struct{}
}

func (s *cowSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	s.n += len(cmds)
	return make([][]byte, len(cmds)), nil
}

func (s *cowSM) Snapshot(io.Writer) error {
	return fmt.Errorf("Snapshot called on a Snapshotter")
}

func (s *cowSM) PrepareSnapshot(meta multiraft.SnapshotMeta) (func(io.Writer) error, error) {
	n := s.n
	s.mu.Lock()
	s.prepared = append(s.prepared, meta)
	release := s.release
	s.mu.Unlock()
	return func(w io.Writer) error {
		if release != nil {
			<-release
		}
		_, err := fmt.Fprintf(w, "%d", n)
		return err
	}, nil
}

func (s *cowSM) Restore(r io.Reader) error {
	if _, err := fmt.Fscan(r, &s.n); err != nil {
		return err
	}
	s.mu.Lock()
	s.restored = append(s.restored, s.n)
	s.mu.Unlock()
	return nil
}

// cowCluster runs cowSMs, the last made per node kept.
type cowCluster struct {
	mu      sync.Mutex
	sms     map[multiraft.NodeID]*cowSM
	release chan struct{}
}

func (cc *cowCluster) on(n multiraft.NodeID) *cowSM {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.sms[n]
}

func newCowCluster(t *testing.T, nodes int, release chan struct{}, configure func(*multiraft.Config)) (*flotillatest.Cluster, *cowCluster) {
	cc := &cowCluster{sms: map[multiraft.NodeID]*cowSM{}, release: release}
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: nodes, Configure: configure,
		StateMachine: func(node multiraft.NodeID, _ multiraft.GroupID) multiraft.StateMachine {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			cc.sms[node] = &cowSM{release: cc.release}
			return cc.sms[node]
		}})
	return c, cc
}

// TestSnapshotWrittenOffTheWorker: a Snapshotter's snapshot, asked for by
// Host.Snapshot, is written while the group goes on applying (its write
// is held, and proposals still complete), lands at the index it was
// prepared at, and is what a restart restores before replaying the rest.
func TestSnapshotWrittenOffTheWorker(t *testing.T) {
	release := make(chan struct{})
	c, cc := newCowCluster(t, 1, release, func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 })
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	for range 5 {
		propose(t, c, g, "a")
	}
	h := c.Host(1)
	type answer struct {
		meta multiraft.SnapshotMeta
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		meta, err := h.Snapshot(t.Context(), g)
		done <- answer{meta, err}
	}()
	c.WaitFor("the snapshot to be prepared", time.Minute, func() bool {
		cc.on(1).mu.Lock()
		defer cc.on(1).mu.Unlock()
		return len(cc.on(1).prepared) == 1
	})
	prepared := cc.on(1).prepared[0]
	for range 7 { // the write is held: the group applies on
		propose(t, c, g, "b")
	}
	select {
	case a := <-done:
		t.Fatalf("Snapshot returned (%v, %v) before its write ended", a.meta, a.err)
	default:
	}
	close(release)
	var a answer
	c.WaitFor("Snapshot to return", time.Minute, func() bool {
		select {
		case a = <-done:
			return true
		default:
			return false
		}
	})
	if a.err != nil || a.meta != prepared || a.meta.Index == 0 || a.meta.Term == 0 {
		t.Fatalf("Snapshot = %+v, %v; prepared at %+v", a.meta, a.err, prepared)
	}
	propose(t, c, g, "c") // its synced append covers the snapshot's batch
	c.Crash(1, nil)
	c.Restart(1)
	c.WaitLeaders([]multiraft.GroupID{g})
	var n int
	if err := c.Host(1).StaleRead(t.Context(), g, func() error { n = cc.on(1).n; return nil }); err != nil {
		t.Fatal(err)
	}
	sm := cc.on(1)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if len(sm.restored) != 1 || sm.restored[0] != 5 || n != 13 {
		t.Fatalf("after the restart: restored %v, count %d; want restored [5] (the prepared count), count 13", sm.restored, n)
	}
}

// TestSnapshotterFeedsFollowers: a replica added behind a truncated log
// gets its state from the leader's Snapshotter (prepared on the worker,
// written on the sending goroutine) and catches up.
func TestSnapshotterFeedsFollowers(t *testing.T) {
	c, cc := newCowCluster(t, 4, nil, func(cfg *multiraft.Config) { cfg.SnapshotEntries, cfg.LogTailEntries = 5, 1 })
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{g})
	for range 20 {
		propose(t, c, g, "x")
	}
	err := c.Do("AddReplica", func(ctx context.Context) error {
		_, err := c.Host(c.Leader(g)).AddReplica(ctx, g, 4, multiraft.AddLearner)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("node 4 to catch up", time.Minute, func() bool {
		var n int
		err := c.Host(4).StaleRead(t.Context(), g, func() error { n = cc.on(4).n; return nil })
		return err == nil && n == 20
	})
	sm := cc.on(4)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if len(sm.restored) == 0 {
		t.Fatal("node 4 caught up without a snapshot: the premise (a truncated log) failed")
	}
}

// TestSnapshotOnRequest: Host.Snapshot of a plain state machine saves at
// once, at the applied index, and says so to subscribers; of an on-disk
// one, it reports the applied index; of a missing group, it is
// ErrGroupNotFound.
func TestSnapshotOnRequest(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Configure: func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 }})
	const g = multiraft.GroupID(1)
	c.CreateGroup(g, 1)
	c.WaitLeaders([]multiraft.GroupID{g})
	sub := c.Host(1).Subscribe(16)
	for range 3 {
		propose(t, c, g, "x")
	}
	st, _ := c.Host(1).Status(g)
	meta, err := c.Host(1).Snapshot(t.Context(), g)
	if err != nil || meta.Index != st.Applied || meta.Term != st.Term || meta.GroupID != g {
		t.Fatalf("Snapshot = %+v, %v; want index %d term %d", meta, err, st.Applied, st.Term)
	}
	for ev := range sub.Events() {
		if ev.Kind == multiraft.EventSnapshotSaved {
			if ev.Index != meta.Index || ev.Term != meta.Term {
				t.Fatalf("snapshot event at %d/%d, Snapshot said %d/%d", ev.Index, ev.Term, meta.Index, meta.Term)
			}
			break
		}
	}
	again, err := c.Host(1).Snapshot(t.Context(), g)
	if err != nil || again != meta {
		t.Fatalf("a second Snapshot with nothing applied = %+v, %v; want %+v", again, err, meta)
	}
	if _, err := c.Host(1).Snapshot(t.Context(), 9); err == nil {
		t.Fatal("Snapshot of a missing group succeeded")
	}

	d := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, DiskStateMachine: func(multiraft.NodeID, multiraft.GroupID, multiraft.Reader) multiraft.DiskStateMachine {
		return noopSM{}
	}})
	d.CreateGroup(g, 1)
	d.WaitLeaders([]multiraft.GroupID{g})
	propose(t, d, g, "x")
	st, _ = d.Host(1).Status(g)
	if meta, err := d.Host(1).Snapshot(t.Context(), g); err != nil || meta.Index != st.Applied {
		t.Fatalf("Snapshot of an on-disk machine = %+v, %v; want index %d", meta, err, st.Applied)
	}
}

// TestGroupOptions: a group's own snapshot interval and proposal bound
// override the host's, for that group only.
func TestGroupOptions(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1, Configure: func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 }})
	c.CreateGroup(1, 1)
	c.CreateGroup(2, 1)
	c.WaitLeaders([]multiraft.GroupID{1, 2})
	h := c.Host(1)
	if err := h.SetGroupOptions(1, multiraft.GroupOptions{SnapshotEntries: 3}); err != nil {
		t.Fatal(err)
	}
	if err := h.SetGroupOptions(9, multiraft.GroupOptions{}); !errors.Is(err, multiraft.ErrGroupNotFound) {
		t.Fatalf("SetGroupOptions of a missing group = %v", err)
	}
	if err := h.SetGroupOptions(1, multiraft.GroupOptions{SnapshotEntries: 3, MaxProposals: -1}); !errors.Is(err, multiraft.ErrInvalid) {
		t.Fatalf("a negative MaxProposals = %v, want ErrInvalid", err)
	}
	sub := h.Subscribe(64)
	for range 4 {
		propose(t, c, 1, "x")
		propose(t, c, 2, "x")
	}
	c.WaitFor("group 1's snapshot", time.Minute, func() bool {
		for {
			select {
			case ev := <-sub.Events():
				if ev.Kind == multiraft.EventSnapshotSaved {
					if ev.GroupID != 1 {
						t.Fatalf("group %d snapshotted under the host's interval of 2^40", ev.GroupID)
					}
					return true
				}
			default:
				return false
			}
		}
	})
	// A bound of 1: with one proposal queued (the worker held by a read
	// function), a second is ErrBusy.
	if err := h.SetGroupOptions(2, multiraft.GroupOptions{MaxProposals: 1}); err != nil {
		t.Fatal(err)
	}
	hold, held := make(chan struct{}), make(chan struct{})
	defer close(hold)
	go func() { _ = h.StaleRead(t.Context(), 2, func() error { close(held); <-hold; return nil }) }()
	<-held
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Propose(ctx, 2, []byte("queued")); !errors.Is(err, multiraft.ErrAmbiguous) {
		t.Fatalf("a proposal queued behind the held worker = %v, want its deadline (ErrAmbiguous)", err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	if _, err := h.Propose(ctx2, 2, []byte("second")); !errors.Is(err, multiraft.ErrBusy) {
		t.Fatalf("a second proposal over the group's bound of 1 = %v, want ErrBusy", err)
	}
	if _, err := h.Propose(ctx2, 1, []byte("other group")); err != nil && !errors.Is(err, multiraft.ErrAmbiguous) {
		t.Fatalf("group 1 (the host's bound) refused: %v", err)
	}
}
