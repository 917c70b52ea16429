package multiraft

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventLeaderChanged: Event.Leader is the group's leadership as seen
	// from this host (as EventListener.LeaderChanged).
	EventLeaderChanged EventKind = iota + 1
	// EventMembershipChanged: a membership change applied here;
	// Event.Replicas is the membership after it, Event.Index its entry.
	EventMembershipChanged
	// EventSnapshotSaved: an in-memory state machine's snapshot was
	// saved here at Event.Index and Event.Term (the log before it may go).
	EventSnapshotSaved
	// EventSnapshotInstalled: a snapshot from the leader replaced the
	// replica's state here at Event.Index and Event.Term.
	EventSnapshotInstalled
	// EventGroupCreated, EventGroupRemoved: a replica of the group was
	// created on or removed from this host.
	EventGroupCreated
	EventGroupRemoved
	// EventGroupFailed: the group's replica here failed alone; Event.Err
	// says why.
	EventGroupFailed
	// EventHostFailed: the host stopped on Event.Err.
	EventHostFailed
)

func (k EventKind) String() string {
	switch k {
	case EventLeaderChanged:
		return "leader changed"
	case EventMembershipChanged:
		return "membership changed"
	case EventSnapshotSaved:
		return "snapshot saved"
	case EventSnapshotInstalled:
		return "snapshot installed"
	case EventGroupCreated:
		return "group created"
	case EventGroupRemoved:
		return "group removed"
	case EventGroupFailed:
		return "group failed"
	case EventHostFailed:
		return "host failed"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event is one thing that happened on the host, for a Subscription. The
// fields a kind does not use are zero.
type Event struct {
	Kind    EventKind
	GroupID GroupID // 0 for EventHostFailed
	// Leader, for EventLeaderChanged.
	Leader LeaderInfo
	// Replicas, for EventMembershipChanged: replica ID to node ID. The map
	// is the event's own.
	Replicas map[ReplicaID]NodeID
	// Index and Term: the membership change's entry, or the snapshot's.
	Index, Term uint64
	// Err, for EventGroupFailed and EventHostFailed.
	Err error
}

// Subscription receives the host's events on a channel, besides the
// EventListener callbacks. Its buffer is bounded and the host never waits
// for a reader: an event that finds the buffer full is dropped and
// counted (Dropped, and the host's flotilla_host_events_dropped_total), so
// a reader that falls behind loses events, never slows the host. A reader
// that must not miss a leadership change can re-read Status after a drop.
type Subscription struct {
	h       *Host
	c       chan Event
	dropped atomic.Uint64
	mu      sync.RWMutex // held to send; Close takes it to close c
	closed  bool
}

// maxEventBuffer bounds a subscription's buffer: its array is allocated
// whole at Subscribe.
const maxEventBuffer = 1 << 16

// Subscribe returns a subscription to the host's events with room for
// buffer events (at least 1, at most 65,536). Close it when done; the
// host's Close closes every subscription, which ends a range over Events.
func (h *Host) Subscribe(buffer int) *Subscription {
	s := &Subscription{h: h, c: make(chan Event, min(max(buffer, 1), maxEventBuffer))}
	h.subs.Lock()
	defer h.subs.Unlock()
	if h.closed.Load() {
		s.closed = true
		close(s.c)
		return s
	}
	if h.subs.m == nil {
		h.subs.m = make(map[*Subscription]struct{})
	}
	h.subs.m[s] = struct{}{}
	h.publishSubsLocked()
	return s
}

// Events is the subscription's channel, closed once the subscription or
// the host is.
func (s *Subscription) Events() <-chan Event { return s.c }

// Dropped returns how many events the subscription lost to a full buffer.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel. It may be called
// more than once.
func (s *Subscription) Close() {
	s.h.subs.Lock()
	delete(s.h.subs.m, s)
	s.h.publishSubsLocked()
	s.h.subs.Unlock()
	s.close()
}

func (s *Subscription) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.c)
	}
}

// offer hands an event to the subscription without waiting.
func (s *Subscription) offer(ev Event) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return true
	}
	select {
	case s.c <- ev:
		return true
	default:
		s.dropped.Add(1)
		return false
	}
}

// publishSubsLocked publishes the subscription list that emit reads
// without a lock (events come from every worker).
func (h *Host) publishSubsLocked() {
	list := make([]*Subscription, 0, len(h.subs.m))
	for s := range h.subs.m {
		list = append(list, s)
	}
	h.subs.list.Store(&list)
}

// closeSubscriptions closes every subscription (the host is closing).
func (h *Host) closeSubscriptions() {
	h.subs.Lock()
	subs := h.subs.m
	h.subs.m = nil
	h.publishSubsLocked()
	h.subs.Unlock()
	for s := range subs {
		s.close()
	}
}

// subscribed reports whether anyone subscribed: an event costly to build
// is built only then.
func (h *Host) subscribed() bool {
	list := h.subs.list.Load()
	return list != nil && len(*list) > 0
}

// replicaNodes returns the group's replicas, typed, as a map of its own.
func (g *group) replicaNodes() map[ReplicaID]NodeID { return typedReplicas(g.replicas) }

// typedReplicas copies a replica-to-node map into its API types.
func typedReplicas(replicas map[uint64]uint64) map[ReplicaID]NodeID {
	m := make(map[ReplicaID]NodeID, len(replicas))
	for r, n := range replicas {
		m[ReplicaID(r)] = NodeID(n)
	}
	return m
}

// emit hands an event to every subscription.
func (h *Host) emit(ev Event) {
	list := h.subs.list.Load()
	if list == nil {
		return
	}
	for _, s := range *list {
		if !s.offer(ev) {
			h.m.EventsDropped.Inc()
		}
	}
}
