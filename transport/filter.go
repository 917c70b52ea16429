package transport

import (
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Verdict is what a Filter decides for one message.
type Verdict struct {
	Drop  bool
	Delay time.Duration // deliver late (and so possibly out of order)
	// CutAfter, for a snapshot, breaks its stream once this many bytes of
	// data arrived (the receiver's reads fail from then on). 0: no cut.
	CutAfter int64
}

// CutSnapshots is a filter that breaks every snapshot stream from one node
// to another after n bytes of data.
func CutSnapshots(from, to NodeID, n int64) Filter {
	return func(f, t NodeID, e Envelope) Verdict {
		if f == from && t == to && e.Message.GetType() == pb.MsgSnap {
			return Verdict{CutAfter: n}
		}
		return Deliver
	}
}

// Deliver is the verdict that lets a message through untouched.
var Deliver = Verdict{}

// Filter decides the fate of a message from one node to another. Filters
// are fault injection for tests; they see snapshots (as their MsgSnap) too.
type Filter func(from, to NodeID, e Envelope) Verdict

// Filters is a chain of filters that one or more transports consult for
// every message they receive (so a fault acts the same whatever carries
// the message). A message is dropped if any filter drops it, and delayed
// by the longest delay any filter asks for.
type Filters struct {
	mu struct {
		sync.RWMutex
		m      map[int]Filter
		nextID int
	}
}

// NewFilters returns an empty chain.
func NewFilters() *Filters {
	f := &Filters{}
	f.mu.m = make(map[int]Filter)
	return f
}

// AddFilter adds a filter to the chain and returns the function that
// removes it.
func (fs *Filters) AddFilter(f Filter) (remove func()) {
	fs.mu.Lock()
	id := fs.mu.nextID
	fs.mu.nextID++
	fs.mu.m[id] = f
	fs.mu.Unlock()
	return func() {
		fs.mu.Lock()
		delete(fs.mu.m, id)
		fs.mu.Unlock()
	}
}

// ClearFilters removes every filter: the network heals.
func (fs *Filters) ClearFilters() {
	fs.mu.Lock()
	clear(fs.mu.m)
	fs.mu.Unlock()
}

// verdict asks every filter; a nil chain delivers everything.
func (fs *Filters) verdict(from, to NodeID, e Envelope) Verdict {
	if fs == nil {
		return Deliver
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var v Verdict
	for _, f := range fs.mu.m {
		fv := f(from, to, e)
		v.Drop = v.Drop || fv.Drop
		v.Delay = max(v.Delay, fv.Delay)
		if fv.CutAfter > 0 && (v.CutAfter == 0 || fv.CutAfter < v.CutAfter) {
			v.CutAfter = fv.CutAfter
		}
	}
	return v
}

func (fs *Filters) empty() bool {
	if fs == nil {
		return true
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return len(fs.mu.m) == 0
}

// DropBetween drops every message between a and b, both ways.
func DropBetween(a, b NodeID) Filter {
	return func(from, to NodeID, _ Envelope) Verdict {
		if (from == a && to == b) || (from == b && to == a) {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// Isolate drops every message to or from node.
func Isolate(node NodeID) Filter {
	return func(from, to NodeID, _ Envelope) Verdict {
		if from == node || to == node {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DropGroup drops every message of a group.
func DropGroup(groupID uint64) Filter {
	return func(_, _ NodeID, e Envelope) Verdict {
		if e.GroupID == groupID {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DropType drops every message of the given type.
func DropType(t pb.MessageType) Filter {
	return func(_, _ NodeID, e Envelope) Verdict {
		if e.Message.GetType() == t {
			return Verdict{Drop: true}
		}
		return Deliver
	}
}

// DelayAll delays every message by d.
func DelayAll(d time.Duration) Filter {
	return func(NodeID, NodeID, Envelope) Verdict { return Verdict{Delay: d} }
}
