package multiraft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Sentinel errors. Every error the host returns wraps one of them (and
// says which group, node or field it is about); compare with errors.Is.
// The one exception: a call whose context ends returns an error wrapping
// ctx.Err() (context.Canceled or context.DeadlineExceeded), and ErrAmbiguous
// too where the call may still take effect (Propose, ChangeMembership,
// TransferLeadership, RemoveGroup).
var (
	// ErrNotLeader: this host does not lead the group. The error is a
	// *NotLeaderError carrying the leader's node ID when it is known.
	ErrNotLeader = errors.New("multiraft: not leader")
	// ErrBusy: a bounded queue or a host-wide budget is full; nothing was
	// queued. Retry later.
	ErrBusy = errors.New("multiraft: busy")
	// ErrGroupNotFound: the group is not hosted here.
	ErrGroupNotFound = errors.New("multiraft: group not found")
	// ErrGroupExists: the group is already hosted here.
	ErrGroupExists = errors.New("multiraft: group already exists")
	// ErrNoSpace: the host's disk is short of space (the space alarm, see
	// Config.MinFreeDiskBytes): new proposals and replicas are refused until
	// it has room again; reads, removals and membership changes go on.
	// Nothing was queued. Retry later, or move replicas away.
	ErrNoSpace = errors.New("multiraft: disk space alarm")
	// ErrTooLarge: a proposal exceeds Config.MaxProposalBytes.
	ErrTooLarge = errors.New("multiraft: proposal too large")
	// ErrStopped: the host is closed or has failed. A proposal that was
	// already pending when it stopped may still apply through the other
	// replicas: treat it like ErrAmbiguous.
	ErrStopped = errors.New("multiraft: host stopped")
	// ErrRejected is a definite failure: the proposal will never apply (its
	// log position was taken by another entry, or raft dropped it).
	ErrRejected = errors.New("multiraft: proposal rejected")
	// ErrAmbiguous is an ambiguous outcome: the proposal may or may not
	// apply (the caller's context ended while it was pending, or
	// leadership was lost). Retry only if the command is idempotent.
	ErrAmbiguous = errors.New("multiraft: outcome unknown")
	// ErrGroupFailed: the group's replica on this host failed (a panic
	// while stepping or applying it) and is no longer processed here; the
	// host and its other groups go on, and so does the group on its other
	// replicas. Remove the replica (and add a new one) or restart the
	// host. A proposal that was pending when it failed gets ErrAmbiguous
	// wrapping it: it may still apply through the other replicas.
	ErrGroupFailed = errors.New("multiraft: group failed on this host")
	// ErrPeer: a call on another host (CreateGroupOn, JoinGroupOn,
	// RemoveGroupOn) failed: the host was unreachable (it also wraps
	// transport.ErrUnknownPeer: retry) or refused the call (the error says
	// why). A peer short of space answers ErrNoSpace instead.
	ErrPeer = errors.New("multiraft: call on a peer failed")
	// ErrDataDir: NewHost cannot use Config.Dir: another process holds
	// it, it holds another node's or another cluster's data, or its data
	// is corrupt or unreadable. The error says which.
	ErrDataDir = errors.New("multiraft: data directory unusable")
	// ErrInvalid: bad arguments or configuration; the error names the
	// field or ID, and what to do where there is something to do.
	ErrInvalid = errors.New("multiraft: invalid argument")
)

// BusyError is the ErrBusy of admission control: the host holds as many
// proposals as it may (Config.MaxProposalsInFlight, or its byte budget)
// or the group as many requests of the kind. Nothing was queued. Retry
// after RetryAfter: at least one tick, jittered, so that many refused
// callers do not come back in one wave and take the CPU the host needs to
// drain what it holds.
type BusyError struct {
	// What is full, in words.
	Reason string
	// RetryAfter is when to try again.
	RetryAfter time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("multiraft: busy: %s (retry after %s)", e.Reason, e.RetryAfter)
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// busy returns a *BusyError with a retry hint of one to two ticks.
func (h *Host) busy(format string, args ...any) *BusyError {
	tick := h.cfg.TickInterval
	return &BusyError{Reason: fmt.Sprintf(format, args...), RetryAfter: tick + rand.N(tick)}
}

// NotLeaderError is returned when a request reaches a host that does not
// lead the group.
type NotLeaderError struct {
	GroupID GroupID
	// Leader is the leader's node, 0 if unknown.
	Leader NodeID
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return fmt.Sprintf("multiraft: group %d: not leader, leader unknown", e.GroupID)
	}
	return fmt.Sprintf("multiraft: group %d: not leader, leader is node %d", e.GroupID, e.Leader)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
