package store

import (
	"fmt"
	"maps"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Founding replicas start from a log that was "truncated" at this index
// and term, as if a snapshot carrying the initial configuration had been
// applied. An index above 1 matters: a replica that joins later starts with
// an empty log (index 0) and so must be caught up by a snapshot, which
// carries the state machine's data.
const (
	InitialIndex = 10
	InitialTerm  = 5
)

// bootState is the initial state of a founding replica.
type bootState struct {
	hardState *pb.HardState
	trunc     truncatedState
	applied   AppliedState
}

// CreateGroup adds a replica of a group to the store and waits until it is
// durable. A founding member is given the founding replicas (replica ID to
// node ID): the group starts from an initial snapshot at InitialIndex whose
// configuration has them as voters. A joining replica (no replicas given)
// starts empty and waits to be caught up. Creations from many goroutines
// share the log writer's syncs.
func (s *Store) CreateGroup(groupID, replicaID uint64, replicas map[uint64]uint64) (*GroupStorage, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	if replicaID == 0 {
		return nil, fmt.Errorf("%w: replica ID 0", ErrInvalid)
	}
	g := newGroupStorage(s, groupID, replicaID)
	it := &writeItem{kind: itemCreate, g: g, bytes: 128, replicaID: replicaID}
	if len(replicas) > 0 {
		if _, ok := replicas[replicaID]; !ok {
			return nil, fmt.Errorf("%w: replica %d is not among the founding replicas", ErrInvalid, replicaID)
		}
		cs := &pb.ConfState{Voters: slices.Sorted(maps.Keys(replicas))}
		boot := &bootState{
			hardState: &pb.HardState{Term: new(uint64(InitialTerm)), Commit: new(uint64(InitialIndex))},
			trunc:     truncatedState{index: InitialIndex, term: InitialTerm},
			applied: AppliedState{Index: InitialIndex, Term: InitialTerm, ConfState: cs, Replicas: maps.Clone(replicas),
				NextReplicaID: slices.Max(cs.Voters) + 1},
		}
		it.boot = boot
		g.mu.hardState, g.mu.trunc, g.mu.applied = boot.hardState, boot.trunc, boot.applied
		g.setLastLocked(InitialIndex)
		g.mu.queuedLast = InitialIndex
	}
	ch := make(chan struct{})
	it.done = func() { close(ch) }

	s.groups.Lock()
	if old, ok := s.groups.m[groupID]; ok && !old.isRemoving() {
		s.groups.Unlock()
		return nil, fmt.Errorf("%w: group %d", ErrGroupExists, groupID)
	}
	if next, ok := s.groups.tombstones[groupID]; ok && replicaID < next {
		s.groups.Unlock()
		return nil, fmt.Errorf("%w: group %d replica %d, next allowed %d", ErrReplicaTooOld, groupID, replicaID, next)
	}
	// Enqueue under the registry lock so that registration order and queue
	// order agree for creations and removals of the same group.
	if err := s.w.enqueue(it); err != nil {
		s.groups.Unlock()
		return nil, err
	}
	s.groups.m[groupID] = g
	s.groups.Unlock()
	if err := s.wait(ch); err != nil {
		return nil, err
	}
	return g, nil
}

// RemoveGroup deletes the group's replica span and leaves a tombstone that
// allows only replica IDs at or above nextReplicaID here from now on, and
// waits until that is durable. Work queued for the group before it is
// written first; work offered after it is refused with ErrGroupRemoved.
func (s *Store) RemoveGroup(groupID, nextReplicaID uint64) error {
	if err := s.usable(); err != nil {
		return err
	}
	s.groups.Lock()
	g, ok := s.groups.m[groupID]
	if !ok || g.isRemoving() {
		s.groups.Unlock()
		return fmt.Errorf("%w: group %d", ErrGroupNotFound, groupID)
	}
	if nextReplicaID <= g.ReplicaID() {
		s.groups.Unlock()
		return fmt.Errorf("%w: next replica ID %d must be above the removed replica %d", ErrInvalid, nextReplicaID, g.ReplicaID())
	}
	if old := s.groups.tombstones[groupID]; old > nextReplicaID {
		nextReplicaID = old // a tombstone never moves backwards
	}
	ch := make(chan struct{})
	it := &writeItem{kind: itemRemove, g: g, bytes: 128, replicaID: nextReplicaID, done: func() { close(ch) }}
	// Refuse the group's new work and queue the removal in one step, so no
	// append can land behind the removal and recreate keys in its span.
	g.mu.Lock()
	err := s.w.enqueue(it)
	g.mu.removing = err == nil
	g.mu.Unlock()
	if err != nil {
		s.groups.Unlock()
		return err
	}
	s.groups.tombstones[groupID] = nextReplicaID
	s.groups.Unlock()
	return s.wait(ch)
}
