package multiraft

// EventListener receives the host's events. Every field is optional. The
// callbacks run on the host's workers: they must return quickly and must
// not call back into the host synchronously.
type EventListener struct {
	// LeaderChanged is called when a group's leader changes as seen from
	// this host. A leader on this host is announced only once it has
	// applied an entry of its own term (and so serves proposals).
	LeaderChanged func(LeaderInfo)
	// GroupCreated is called when a group is created on this host.
	GroupCreated func(groupID GroupID)
	// GroupRemoved is called when a group is removed from this host.
	GroupRemoved func(groupID GroupID)
	// HostFailed is called once when the host stops on a fatal error
	// (a failed write or sync, a stalled disk, a state machine error).
	HostFailed func(err error)
	// GroupFailed is called once when a group's replica on this host
	// fails alone (see ErrGroupFailed); err says why.
	GroupFailed func(groupID GroupID, err error)
}

// LeaderInfo describes a group's leadership.
type LeaderInfo struct {
	GroupID GroupID
	// Leader is the leader's node, 0 if the group has no leader now.
	Leader NodeID
	Term   uint64
	// Local is true when this host is the leader.
	Local bool
}

func (l *EventListener) fill() {
	if l.LeaderChanged == nil {
		l.LeaderChanged = func(LeaderInfo) {}
	}
	if l.GroupCreated == nil {
		l.GroupCreated = func(GroupID) {}
	}
	if l.GroupRemoved == nil {
		l.GroupRemoved = func(GroupID) {}
	}
	if l.HostFailed == nil {
		l.HostFailed = func(error) {}
	}
	if l.GroupFailed == nil {
		l.GroupFailed = func(GroupID, error) {}
	}
}
