package multiraft

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/store"
	"github.com/flotilla-io/flotilla/transport"
)

// Snapshots between hosts. When raft needs to catch a follower up past the
// leader's truncated log, it emits a MsgSnap. The leader's worker then
// serializes the state machine as it is applied now, with the applied
// state it reflects (index, term, ConfState, replicas, next replica ID),
// rewrites the MsgSnap's metadata to match, and streams both through the
// transport. The send's outcome reaches raft as ReportSnapshot, success or
// failure, every time (invariant 3).
//
// The sender announces the data's size first. The receiver reserves that
// much of the host's staging budget (SnapshotStagingBytes) or refuses
// before any data moves, then writes the data as it arrives into a staged
// table on disk (store.StageSnapshot; the in-memory kind writes its
// serialization there in pieces), finishes it once the stream checked out,
// and delivers the MsgSnap. When raft accepts it, the snapshot arrives in
// a MsgStorageAppend and is installed on the append path: the store
// ingests the staged table over the group's replica span (after the
// group's queued appends are durable), the state machine is restored from
// it, and only then are the append's responses released. Apply skips
// every index at or below the installed one. A stream that breaks leaves
// nothing behind: its table is removed and its reservation returned.
//
// Staged data lives until the append that carries it is installed, which
// a busy log writer may delay by many passes (the append waits in the
// group's backlog like any refused append), or until a pass ends in which
// raft did not take its MsgSnap. Its reservation is held all that time.
//
// The ingest records the snapshot's index as the commit index: the log
// ends there until the entries that follow the snapshot in the same
// append are written, with the append's real hard state, in a later synced
// batch. A crash in between must not leave a commit index beyond the log.
//
// Stream format: len:uvarint applied-state state-machine-bytes...

// maxSnapshotHeader bounds a snapshot's applied-state header.
const maxSnapshotHeader = 16 << 20

// errRestore: the state machine could not load an installed snapshot.
var errRestore = errors.New("restore state machine")

type stagedSnapshot struct {
	applied store.AppliedState
	table   *store.StagedSnapshot
	size    int64 // reserved from the host's staging budget
}

// reserveStaging takes n bytes of the staging budget, or reports that
// they do not fit (never taking them for a moment: a concurrent snapshot
// that fits is not refused for it).
func (h *Host) reserveStaging(n int64) bool {
	budget := h.cfg.SnapshotStagingBytes
	if n <= 0 || n > budget {
		return false
	}
	for {
		cur := h.stagingBytes.Load()
		if cur > budget-n {
			return false
		}
		if h.stagingBytes.CompareAndSwap(cur, cur+n) {
			h.m.StagingBytes.Add(float64(n))
			return true
		}
	}
}

// releaseStaged removes a staged snapshot's table (if it was not
// installed) and returns its reservation.
func (h *Host) releaseStaged(s *stagedSnapshot) {
	if s.table != nil {
		s.table.Discard()
	}
	h.stagingBytes.Add(-s.size)
	h.m.StagingBytes.Sub(float64(s.size))
}

// sendSnapshot serializes the group and streams it to the replica m is for.
// After a failure it waits a back-off before the next (raft asks again at
// every heartbeat, and each send reads the whole state).
func (g *group) sendSnapshot(m *pb.Message) {
	to := m.GetTo()
	node, ok := g.replicas[to]
	if f := g.snapFails[to]; !ok || (f != nil && g.h.cfg.Clock.Now().Before(f.retryAt)) {
		g.rn.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	applied, measure, writeData, release, err := g.sm.snapshot(g)
	var header []byte
	if err == nil {
		header, err = applied.Marshal()
	}
	header = append(binary.AppendUvarint(nil, uint64(len(header))), header...)
	if err != nil {
		if release != nil {
			release()
		}
		g.h.log.Error("snapshot for a follower", "group", g.id, "err", err)
		g.rn.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	m = proto.Clone(m).(*pb.Message)
	m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index: new(applied.Index), Term: new(applied.Term), ConfState: proto.Clone(pb.EnsureConfState(applied.ConfState)).(*pb.ConfState),
	}}
	if g.sending == nil {
		g.sending = make(map[uint64]uint64)
	}
	g.sending[to] = applied.Index
	g.h.trans.SendSnapshot(node, &transport.OutboundSnapshot{
		GroupID: g.id,
		Message: m,
		Measure: func() (int64, error) {
			size, err := measure()
			return int64(len(header)) + size, err
		},
		WriteData: func(w io.Writer) error {
			if _, err := w.Write(header); err != nil {
				return err
			}
			return writeData(w)
		},
	}, func(err error) {
		release()
		g.mu.Lock()
		g.mu.snapReports = append(g.mu.snapReports, snapReport{replica: to, err: err})
		g.mu.Unlock()
		g.h.sched.Enqueue(g.id, scheduler.Messages)
	})
}

type snapReport struct {
	replica uint64
	err     error // nil: the follower took it
}

// snapFailures is what a leader knows of the snapshots to one follower
// that failed in a row, and when it sends the next.
type snapFailures struct {
	count   uint64
	last    string
	retryAt time.Time
}

// Snapshot back-off: after the nth failure in a row the next send waits
// snapshotBackoff << (n-1), at most maxSnapshotBackoff.
// A follower whose receive slots were all busy is asked again after
// busySnapshotWait.
const (
	snapshotBackoff    = 250 * time.Millisecond
	maxSnapshotBackoff = 30 * time.Second
	busySnapshotWait   = time.Second
)

// snapshotWarnAt is how many snapshots to a follower must fail in a row
// before the host warns (and again at every multiple of it): one failure
// is routine (raft retries), repeated ones leave the group a replica short.
const snapshotWarnAt = 3

// reportSnapshots tells raft how each snapshot send ended, and keeps the
// failures in a row for Status (describe shows them) and the log.
func (g *group) reportSnapshots(reports []snapReport) {
	for _, r := range reports {
		status := raft.SnapshotFinish
		// All send or receive slots busy is a deferral: raft asks again
		// soon, and it says nothing about the follower (a peer's answer
		// arrives as text).
		busy := r.err != nil && (errors.Is(r.err, transport.ErrTooManySnapshot) ||
			strings.Contains(r.err.Error(), transport.ErrTooManySnapshot.Error()))
		if busy && g.role == raft.StateLeader {
			// Wait a moment before the next, without counting a failure
			// (a follower says it is busy only after this host measured
			// the snapshot, a read of it all).
			if g.snapFails == nil {
				g.snapFails = make(map[uint64]*snapFailures)
			}
			f := g.snapFails[r.replica]
			if f == nil {
				f = &snapFailures{}
				g.snapFails[r.replica] = f
			}
			f.retryAt = g.h.cfg.Clock.Now().Add(busySnapshotWait)
		}
		if r.err != nil && (busy || g.role != raft.StateLeader) {
			status = raft.SnapshotFailure
		} else if r.err != nil {
			status = raft.SnapshotFailure
			if g.snapFails == nil {
				g.snapFails = make(map[uint64]*snapFailures)
			}
			f := g.snapFails[r.replica]
			if f == nil {
				f = &snapFailures{}
				g.snapFails[r.replica] = f
			}
			f.count++
			f.last = r.err.Error()
			f.retryAt = g.h.cfg.Clock.Now().Add(min(snapshotBackoff<<min(f.count-1, 10), maxSnapshotBackoff))
			if f.count%snapshotWarnAt == 0 {
				g.h.log.Warn("snapshots to a follower keep failing: the group runs without it until one arrives",
					"group", g.id, "replica", r.replica, "node", g.replicas[r.replica], "failures_in_a_row", f.count, "err", r.err)
			}
		} else if f := g.snapFails[r.replica]; f != nil {
			if f.count >= snapshotWarnAt {
				g.h.log.Info("snapshot to a follower arrived after failures", "group", g.id, "replica", r.replica,
					"node", g.replicas[r.replica], "failures_before", f.count)
			}
			delete(g.snapFails, r.replica)
		}
		g.rn.ReportSnapshot(r.replica, status)
		delete(g.sending, r.replica)
	}
	if len(reports) == 0 {
		if g.truncRetry {
			g.truncateKept() // one a busy log writer refused
		}
		return // every pass calls this
	}
	if g.sm.retainFrom() > 0 {
		g.truncateKept() // a truncation the send held back
	}
	g.publishStatus(true) // the failures in a row show at once
}

// appliedState is what the state machine reflects now.
func (g *group) appliedState() store.AppliedState {
	return store.AppliedState{
		Index: g.applied, Term: g.appliedTerm, ConfState: proto.Clone(pb.EnsureConfState(g.confState)).(*pb.ConfState),
		Replicas: maps.Clone(g.replicas), NextReplicaID: g.nextReplicaID,
	}
}

// handleSnapshot reserves room for a snapshot, writes its data to a staged
// table as it arrives, and delivers the MsgSnap with it to the group.
func (h *Host) handleSnapshot(from transport.NodeID, s *transport.InboundSnapshot) error {
	if err := h.usable(); err != nil {
		return err
	}
	g := h.group(GroupID(s.GroupID))
	if g == nil {
		h.m.MessagesDropped.WithLabelValues("unknown_group").Inc()
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, s.GroupID)
	}
	m := s.Message
	if m.GetTo() != g.replicaID {
		h.m.MessagesDropped.WithLabelValues("stale_replica").Inc()
		return fmt.Errorf("%w: snapshot for replica %d of group %d, this host has %d", ErrInvalid, m.GetTo(), s.GroupID, g.replicaID)
	}
	// Room first, before any data moves: the staged table takes about the
	// data's size (less, compressed), and the disk must keep its margin.
	if h.space.full.Load() {
		h.m.SnapshotsRefused.WithLabelValues("no_room").Inc()
		return fmt.Errorf("%w: disk space alarm, snapshot of group %d (%d bytes) refused", ErrNoSpace, s.GroupID, s.Size)
	}
	if !h.reserveStaging(s.Size) {
		h.m.SnapshotsRefused.WithLabelValues("no_room").Inc()
		return fmt.Errorf("%w: snapshot of group %d (%d bytes) does not fit the staging budget (%d of %d bytes taken)",
			ErrBusy, s.GroupID, s.Size, h.stagingBytes.Load(), h.cfg.SnapshotStagingBytes)
	}
	staged := &stagedSnapshot{size: s.Size}
	data := &streamReader{r: s.Data, size: s.Size}
	s.Data = data
	if err := g.receiveSnapshot(s, staged); err != nil {
		h.releaseStaged(staged)
		reason := "failed"
		if data.err == nil && errors.Is(err, ErrInvalid) {
			reason = "invalid" // the stream was fine, its content was not
		}
		h.m.SnapshotsRefused.WithLabelValues(reason).Inc()
		return err
	}
	// The data and its message go in together, so the pass that steps the
	// message has the data; what raft does not take is dropped after it.
	index := staged.applied.Index
	g.mu.Lock()
	if err := g.mu.refuse; err != nil {
		g.mu.Unlock()
		h.releaseStaged(staged)
		h.m.MessagesDropped.WithLabelValues("closed_group").Inc()
		return err
	}
	if len(g.mu.inbox) >= h.cfg.MaxGroupInbox {
		g.mu.Unlock()
		h.releaseStaged(staged)
		h.m.InboxDropped.Inc()
		return fmt.Errorf("%w: inbox of group %d full, snapshot refused", ErrBusy, s.GroupID)
	}
	if old := g.mu.staged[index]; old != nil {
		h.releaseStaged(old)
	}
	if g.mu.staged == nil {
		g.mu.staged = make(map[uint64]*stagedSnapshot)
	}
	g.mu.staged[index] = staged
	g.queueInboundLocked(inbound{m: m, from: from})
	g.mu.Unlock()
	h.sched.Enqueue(s.GroupID, scheduler.Messages)
	return nil
}

// streamReader keeps the error a snapshot stream broke with, to tell a
// broken stream from bad data, and counts what arrived of the announced
// size.
type streamReader struct {
	r    io.Reader
	size int64
	n    int64
	err  error
}

func (r *streamReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// receiveSnapshot reads a snapshot's header and writes its data into a
// staged table (into staged, which the caller releases on error).
func (g *group) receiveSnapshot(s *transport.InboundSnapshot, staged *stagedSnapshot) error {
	r := bufio.NewReaderSize(s.Data, 64<<10)
	n, err := binary.ReadUvarint(r)
	if err != nil || n > maxSnapshotHeader {
		return fmt.Errorf("%w: snapshot of group %d: bad header length (%d): %v", ErrInvalid, s.GroupID, n, err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: snapshot of group %d: header: %w", ErrInvalid, s.GroupID, err)
	}
	applied, err := store.UnmarshalAppliedState(b)
	if err != nil {
		return fmt.Errorf("%w: snapshot of group %d: %w", ErrInvalid, s.GroupID, err)
	}
	if s.Message.GetType() != pb.MsgSnap || s.Message.GetSnapshot().GetMetadata().GetIndex() != applied.Index {
		return fmt.Errorf("%w: snapshot of group %d does not match its message", ErrInvalid, s.GroupID)
	}
	staged.applied = applied
	if staged.table, err = g.st.StageSnapshot(applied.Index); err != nil {
		return fmt.Errorf("multiraft: staging snapshot of group %d: %w", s.GroupID, err)
	}
	data := s.Data.(*streamReader)
	avail := func() uint64 { return uint64(max(data.size-data.n, 0)) + uint64(r.Buffered()) }
	if err := g.sm.receive(r, avail, staged.table); err != nil {
		return fmt.Errorf("multiraft: receiving snapshot of group %d: %w", s.GroupID, err)
	}
	// The transport's reader reached EOF: the stream arrived whole.
	if err := staged.table.Finish(); err != nil {
		return fmt.Errorf("multiraft: staging snapshot of group %d: %w", s.GroupID, err)
	}
	return nil
}

// stage keeps the snapshots received since the last pass, the newest one
// for each index.
func (g *group) stage(received map[uint64]*stagedSnapshot) {
	for index, s := range received {
		if old := g.staged[index]; old != nil {
			g.h.releaseStaged(old)
		}
		if g.staged == nil {
			g.staged = make(map[uint64]*stagedSnapshot)
		}
		g.staged[index] = s
	}
}

// releaseUntaken drops, at the end of a pass, the staged snapshots raft
// did not take: those no append waiting in the backlog carries.
func (g *group) releaseUntaken() {
	for index, s := range g.staged {
		if !slices.ContainsFunc(g.appendBacklog, func(m *pb.Message) bool { return m.GetSnapshot().GetMetadata().GetIndex() == index }) {
			g.h.releaseStaged(s)
			delete(g.staged, index)
		}
	}
}

// releaseStagedAll drops every staged snapshot.
func (g *group) releaseStagedAll() {
	for index, s := range g.staged {
		g.h.releaseStaged(s)
		delete(g.staged, index)
	}
}

// installSnapshot installs the snapshot of a MsgStorageAppend from the
// staged data, then appends the entries that follow it, and releases the
// append's responses once all of it is durable. It returns store.ErrBusy
// when the log writer cannot take the group's barrier or its entries now:
// the caller keeps the append for a later pass, stripped of its snapshot
// if that was installed.
func (g *group) installSnapshot(m *pb.Message) error {
	index := m.GetSnapshot().GetMetadata().GetIndex()
	staged := g.staged[index]
	if staged == nil {
		// Raft took a MsgSnap whose data was never staged with it: the
		// group cannot go on (and the host need not stop for it).
		panic(fmt.Sprintf("multiraft: group %d: snapshot at %d without its data", g.id, index))
	}
	var hs *pb.HardState
	if m.Term != nil || m.Vote != nil || m.Commit != nil {
		hs = &pb.HardState{Term: new(m.GetTerm()), Vote: new(m.GetVote()), Commit: new(m.GetCommit())}
	}
	// The ingest writes the snapshot's index as the commit index; hs goes
	// with the entries below.
	// The log the install brings is readable as soon as it is ingested
	// (a fetch must not find its batches and be refused their entries),
	// and not before (until then the old log, which may hold entries that
	// never committed, is there).
	staged.table.OnIngest = func() { g.readable.Store(index) }
	if err := g.st.InstallStaged(context.Background(), staged.applied, hs, staged.table); err != nil {
		return err
	}
	delete(g.staged, index)
	g.h.releaseStaged(staged)
	defer g.releaseReads() // reads the snapshot covers need no apply
	if err := g.sm.restore(g, nil); err != nil {
		return fmt.Errorf("%w: %w", errRestore, err)
	}
	a := staged.applied
	g.applied, g.appliedTerm, g.confState, g.replicas, g.nextReplicaID = a.Index, a.Term, a.ConfState, a.Replicas, a.NextReplicaID
	g.durable = a.Index
	g.restoreGen++ // a snapshot being written here is older: dropped when it lands
	g.answerSnapWaiters(nil)
	g.readable.Store(a.Index)
	if g.replicas == nil {
		g.replicas = make(map[uint64]uint64)
	}
	g.replicasVersion++
	g.noteLeaderNode() // a joining replica may learn its leader's node only now
	clear(g.learned)   // the snapshot says who is who
	g.failPending(fmt.Errorf("%w: group %d: replaced by a snapshot", ErrAmbiguous, g.id))
	g.h.emit(Event{Kind: EventSnapshotInstalled, GroupID: GroupID(g.id), Index: a.Index, Term: a.Term})
	if g.h.subscribed() { // the membership may have changed with it
		g.h.emit(Event{Kind: EventMembershipChanged, GroupID: GroupID(g.id), Replicas: g.replicaNodes(), Index: a.Index, Term: a.Term})
	}
	resps := g.sortResponses(m.GetResponses()) // with the snapshot's replicas
	if len(m.GetEntries()) == 0 && hs.GetCommit() <= index {
		g.release(resps)
		return nil
	}
	err := g.st.Append(m.GetEntries(), hs, func() { g.release(resps) })
	if errors.Is(err, store.ErrBusy) {
		// The snapshot is in; what remains of the append (the entries and
		// the hard state, with the responses) waits like any refused
		// append, where the whole append was.
		m.Snapshot = nil
	}
	return err
}
