package multiraft

import "fmt"

// GroupOptions override, for one group on this host, settings the host's
// Config gives every group. A zero field keeps the host's setting.
type GroupOptions struct {
	// SnapshotEntries: an in-memory state machine's durable snapshot every
	// this many applied entries (Config.SnapshotEntries): a partition with
	// a large state snapshots less often, a busy small one more.
	SnapshotEntries uint64
	// MaxProposals bounds the group's queued proposals, and its waiting
	// reads and transfers (Config.MaxGroupProposals): a hot partition may
	// hold more, a cold one fewer.
	MaxProposals int
}

// SetGroupOptions sets a group's options on this host: new requests are
// bounded by them at once, and the snapshot interval counts from the
// group's next apply. They are not stored: a broker sets them again after
// a restart (where it loads its partitions, or on EventGroupCreated) and
// on each host of the group.
func (h *Host) SetGroupOptions(groupID GroupID, o GroupOptions) error {
	if o.MaxProposals < 0 {
		return fmt.Errorf("%w: GroupOptions.MaxProposals %d is negative", ErrInvalid, o.MaxProposals)
	}
	g := h.group(groupID)
	if g == nil {
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	g.opts.Store(&o)
	return nil
}

// snapshotEntries is the group's snapshot interval.
func (g *group) snapshotEntries() uint64 {
	if o := g.opts.Load(); o != nil && o.SnapshotEntries > 0 {
		return o.SnapshotEntries
	}
	return g.h.cfg.SnapshotEntries
}

// maxProposals is the group's bound on each kind of queued request.
func (g *group) maxProposals() int {
	if o := g.opts.Load(); o != nil && o.MaxProposals > 0 {
		return o.MaxProposals
	}
	return g.h.cfg.MaxGroupProposals
}
