package multiraft

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/time/rate"
)

// The space alarm, like etcd's NOSPACE: a full disk refuses new writes
// and keeps everything that frees space working.
//
// A disk that fills up does not fail a write cleanly: Pebble's flushes
// fail first, in the background, and are retried for ever; memtables pile
// up until Pebble stalls writes, and every proposal in flight hangs. So
// the host watches the free space of its data directory's disk (the FS's
// GetDiskUsage) every DiskCheckInterval and trips the alarm below
// MinFreeDiskBytes, well before the WAL can hit ENOSPC: Propose, CreateGroup
// and JoinGroup then fail at once with ErrNoSpace. Raft traffic, log
// truncation, snapshots, membership changes, reads and group removals go
// on: they are how space comes back. An ENOSPC from any write trips the
// alarm too, whatever the probe says, for at least enospcHold. The alarm
// clears by itself once the disk has MinFreeDiskBytes and an eighth more
// free (the margin keeps it from flapping). An ENOSPC the WAL or a sync
// cannot get past still fails the host, like any failed write.

// enospcHold is how long an ENOSPC keeps the alarm up at least: Pebble's
// own retries must not see it flap.
const enospcHold = 10 * time.Second

type spaceAlarm struct {
	h         *Host
	min, free uint64      // trips below min; clears at or above free; 0: disabled
	full      atomic.Bool // read on every proposal; written under mu
	log       rate.Sometimes

	mu struct {
		sync.Mutex
		why string // what tripped the alarm, while it is up
		// enospcAt is when a write last failed for lack of space, zero if
		// never since the alarm last cleared.
		enospcAt    time.Time
		unsupported bool // the FS cannot tell its free space (said once)
	}
	stop chan struct{}
	done chan struct{}
}

func newSpaceAlarm(h *Host) *spaceAlarm {
	a := &spaceAlarm{h: h, stop: make(chan struct{}), done: make(chan struct{})}
	if h.cfg.MinFreeDiskBytes > 0 {
		a.min = uint64(h.cfg.MinFreeDiskBytes)
		a.free = a.min + a.min/8
	}
	a.log.Interval = 10 * time.Second
	return a
}

// enabled reports whether the alarm is on (MinFreeDiskBytes not negative).
func (a *spaceAlarm) enabled() bool { return a.min > 0 }

// start checks the disk at once and then every DiskCheckInterval until
// close.
func (a *spaceAlarm) start() {
	if !a.enabled() {
		close(a.done)
		return
	}
	a.check()
	t := a.h.cfg.Clock.NewTicker(a.h.cfg.DiskCheckInterval)
	go func() {
		defer close(a.done)
		defer t.Stop()
		for {
			select {
			case <-t.C():
				a.check()
			case <-a.stop:
				return
			}
		}
	}()
}

func (a *spaceAlarm) close() {
	close(a.stop)
	<-a.done
}

// check reads the free space and trips or clears the alarm.
func (a *spaceAlarm) check() {
	u, err := a.h.cfg.FS.GetDiskUsage(a.h.cfg.Dir)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		switch {
		case a.mu.unsupported:
		case errors.Is(err, vfs.ErrUnsupported): // an in-memory FS
			a.h.log.Debug("the FS cannot tell its free space: the space alarm trips only on ENOSPC", "dir", a.h.cfg.Dir)
		default:
			a.h.log.Warn("cannot read the disk's free space: the space alarm trips only on ENOSPC", "dir", a.h.cfg.Dir, "err", err)
		}
		a.mu.unsupported = true
		if !a.enospcHeldLocked() {
			a.clearLocked("no ENOSPC for a while")
		}
		return
	}
	a.h.m.DiskFreeBytes.Set(float64(u.AvailBytes))
	switch {
	case u.AvailBytes < a.min:
		a.tripLocked(fmt.Sprintf("%d bytes free, below MinFreeDiskBytes %d", u.AvailBytes, a.min))
	case u.AvailBytes >= a.free && !a.enospcHeldLocked():
		a.clearLocked(fmt.Sprintf("%d bytes free", u.AvailBytes))
	}
}

// enospcHeldLocked reports whether an ENOSPC still holds the alarm up.
func (a *spaceAlarm) enospcHeldLocked() bool {
	at := a.mu.enospcAt
	return !at.IsZero() && a.h.cfg.Clock.Now().Sub(at) < enospcHold
}

// noteENOSPC is the store's OnDiskFull: a write just failed for lack of
// space. Every write waits while it runs: it only flips the alarm.
func (a *spaceAlarm) noteENOSPC() {
	a.h.m.DiskFullErrors.Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.enospcAt = a.h.cfg.Clock.Now()
	a.tripLocked("a write failed with ENOSPC")
}

func (a *spaceAlarm) tripLocked(why string) {
	a.mu.why = why
	if a.full.Load() {
		return
	}
	a.full.Store(true)
	a.h.m.DiskSpaceAlarm.Set(1)
	a.log.Do(func() {
		a.h.log.Error("disk space alarm: refusing new writes (proposals, group creation) until space returns; reads, "+
			"raft traffic, truncation, snapshots and removals go on", "dir", a.h.cfg.Dir, "why", why)
	})
}

func (a *spaceAlarm) clearLocked(why string) {
	a.mu.enospcAt = time.Time{}
	if !a.full.Load() {
		return
	}
	a.full.Store(false)
	a.mu.why = ""
	a.h.m.DiskSpaceAlarm.Set(0)
	a.log.Do(func() {
		a.h.log.Warn("disk space alarm cleared: taking writes again", "dir", a.h.cfg.Dir, "why", why)
	})
}

// refuse returns ErrNoSpace, saying why, while the alarm is up.
func (a *spaceAlarm) refuse() error {
	if !a.full.Load() {
		return nil
	}
	a.mu.Lock()
	why := a.mu.why
	a.mu.Unlock()
	return fmt.Errorf("%w: the disk of %s is short of space (%s)", ErrNoSpace, a.h.cfg.Dir, why)
}
