package scheduler

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/clock"
	"github.com/flotilla-io/flotilla/metrics"
)

// Flags say what kind of work waits for a group.
type Flags uint8

const (
	// Messages: inbound Raft messages are queued for the group.
	Messages Flags = 1 << iota
	// Requests: proposals, reads or admin requests are queued.
	Requests
	// Tick: the group's logical clock should advance.
	Tick
	// Storage: storage completions (durable appends, applied entries) are
	// ready to be stepped back into the group.
	Storage
	// Control: inbound messages of the failure detector (heartbeats and
	// their responses, votes, pre-votes, timeout-now) are queued. A group
	// whose only work is control messages is queued in the control lane,
	// ahead of data.
	Control
)

// controlWork is the work that puts a group in the control lane: cheap,
// and what keeps leaders and elections alive. Ticks are not: a follower
// whose ticks ran ahead of its busy leader's (whose ticks wait with its
// data) would time out on it.
const controlWork = Control

func (f Flags) String() string {
	var parts []string
	for _, n := range []struct {
		f    Flags
		name string
	}{{Messages, "messages"}, {Requests, "requests"}, {Tick, "tick"}, {Storage, "storage"}, {Control, "control"}} {
		if f&n.f != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Work is what a worker hands to the Processor for one group.
type Work struct {
	Flags Flags
	// Ticks is how many ticks arrived since the group was last processed
	// (at least 1 when Flags has Tick).
	Ticks int
}

// maxPendingTicks caps the ticks counted for a group that is not being
// processed; the processor applies a few at most anyway.
const maxPendingTicks = 1 << 10

// Processor does a group's work. Process is called by one worker at a time
// per group, with the flags raised since the last call.
type Processor interface {
	Process(groupID uint64, w Work)
}

// ProcessorFunc adapts a function to Processor.
type ProcessorFunc func(groupID uint64, w Work)

// Process calls f.
func (f ProcessorFunc) Process(groupID uint64, w Work) { f(groupID, w) }

// Config configures a Scheduler.
type Config struct {
	// Workers is the size of the worker pool. Default 2 x GOMAXPROCS.
	Workers int
	// TickInterval is the period of the tick loop. Default 100 ms.
	TickInterval time.Duration
	// Clock drives the tick loop. Default the wall clock.
	Clock clock.Clock
	// Metrics receives the scheduler's figures. Default: an unregistered set.
	Metrics *metrics.Scheduler
	// OnTick, if set, runs at every tick before any group's flag is
	// raised (the host flushes the heartbeats of the previous tick).
	OnTick func()
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Workers: 2 * runtime.GOMAXPROCS(0), TickInterval: 100 * time.Millisecond}
}

// Validate fills defaults and rejects bad settings.
func (c *Config) Validate() error {
	d := DefaultConfig()
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.TickInterval == 0 {
		c.TickInterval = d.TickInterval
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewScheduler()
	}
	switch {
	case c.Workers < 0:
		return fmt.Errorf("scheduler: Workers %d is negative", c.Workers)
	case c.TickInterval < 0:
		return errors.New("scheduler: TickInterval is negative")
	}
	return nil
}

// Scheduler runs groups' work on a fixed pool of workers.
type Scheduler struct {
	cfg  Config
	proc Processor
	m    *metrics.Scheduler

	mu struct {
		sync.Mutex
		// groups holds the state of every group with work queued or in
		// progress; idle groups have no entry.
		groups  map[uint64]entry
		queue   ring // normal lane
		control ring // the failure detector's work and leaderless groups, served before the normal lane
		prio    ring // system groups, served first
		// stale counts the entries of the normal lane left behind by
		// groups moved to the control lane (see promoteLocked): skipped
		// when they come up.
		stale    int
		priority map[uint64]struct{}
		urgent   map[uint64]struct{} // groups always queued in the control lane (SetUrgent)
		stopped  bool
	}
	workReady sync.Cond // signalled when a lane gains a group

	ticking struct {
		sync.Mutex
		ids []uint64
		pos map[uint64]int // index of each ticking group in ids
	}

	stop chan struct{}
	wg   sync.WaitGroup
}

type entry struct {
	flags  Flags
	ticks  int
	queued bool
	lane   lane // where it is queued, if it is
	// control: queue in the control lane when next queued (EnqueueUrgent
	// raised work while the group was being processed).
	control    bool
	processing bool
	queuedAt   time.Time
}

// lane is one of the run queues.
type lane uint8

const (
	laneNormal lane = iota
	laneControl
	lanePrio
)

// New creates a scheduler; Start starts it.
func New(cfg Config, proc Processor) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, proc: proc, m: cfg.Metrics, stop: make(chan struct{})}
	s.mu.groups = make(map[uint64]entry)
	s.mu.priority = make(map[uint64]struct{})
	s.mu.urgent = make(map[uint64]struct{})
	s.workReady.L = &s.mu
	s.ticking.pos = make(map[uint64]int)
	return s, nil
}

// Start starts the workers and the tick loop.
func (s *Scheduler) Start() {
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	// The ticker is made here, not in the loop, so that time moved after
	// Start returns is seen by the loop (tests advance a manual clock).
	t := s.cfg.Clock.NewTicker(s.cfg.TickInterval)
	s.wg.Add(1)
	go s.tickLoop(t, s.cfg.Clock.Now())
}

// Close stops the tick loop and the workers. A worker finishes the group it
// is processing; queued work is dropped. Enqueue after Close does nothing.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if s.mu.stopped {
		s.mu.Unlock()
		return
	}
	s.mu.stopped = true
	s.workReady.Broadcast()
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
}

// Enqueue raises flags for a group and queues it if it is not queued or
// being processed already. It reports false once the scheduler is closed.
func (s *Scheduler) Enqueue(groupID uint64, f Flags) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.stopped {
		return false
	}
	if s.raiseLocked(groupID, f, time.Now(), false) {
		s.workReady.Signal()
	}
	return true
}

// EnqueueMany raises f for every group in ids under one lock: a frame of
// many groups' messages, or a tick, takes the lock once.
func (s *Scheduler) EnqueueMany(ids []uint64, f Flags) { s.enqueueMany(ids, f, false) }

// EnqueueUrgent is EnqueueMany for work that must not wait behind data:
// the groups are queued in the control lane, a group already waiting in
// the normal lane moves there, and one being processed goes there when
// it is queued again. The host uses it when a peer's node stops being
// live: the followers of its leaders must elect, whatever data they hold.
func (s *Scheduler) EnqueueUrgent(ids []uint64, f Flags) { s.enqueueMany(ids, f, true) }

func (s *Scheduler) enqueueMany(ids []uint64, f Flags, control bool) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.stopped {
		return
	}
	queued, now := 0, time.Now()
	for _, id := range ids {
		if s.raiseLocked(id, f, now, control) {
			queued++
		} else if control {
			s.promoteLocked(id)
		}
	}
	if queued >= s.cfg.Workers {
		s.workReady.Broadcast()
	} else {
		for ; queued > 0; queued-- {
			s.workReady.Signal()
		}
	}
}

// raiseLocked raises f for the group and reports whether it was queued
// (in the control lane if control is set).
func (s *Scheduler) raiseLocked(groupID uint64, f Flags, now time.Time, control bool) bool {
	e := s.mu.groups[groupID]
	e.flags |= f
	if f&Tick != 0 && e.ticks < maxPendingTicks {
		e.ticks++
	}
	queue := !e.queued && !e.processing
	if queue {
		e.queued = true
		e.queuedAt = now
		e.lane = s.pushLocked(groupID, e.flags, control)
	} else if control && e.processing {
		e.control = true
	}
	s.mu.groups[groupID] = e
	return queue
}

// promoteLocked moves a group waiting in the normal lane to the back of
// the control lane. Its entry in the normal lane stays (a ring has no
// removal) and is skipped when it comes up.
func (s *Scheduler) promoteLocked(groupID uint64) {
	e, ok := s.mu.groups[groupID]
	if !ok || !e.queued || e.lane != laneNormal {
		return
	}
	s.mu.control.push(groupID)
	s.m.ControlQueueDepth.Inc()
	s.mu.stale++
	e.lane = laneControl
	s.mu.groups[groupID] = e
}

// pushLocked queues a group in its lane and returns it: the priority
// lane for system groups, the control lane for urgent groups, for work
// that is only the failure detector's and when control is set, the normal
// lane for the rest. The lane is chosen when the group is queued; work
// raised while it waits rides along (only promoteLocked moves it).
func (s *Scheduler) pushLocked(groupID uint64, f Flags, control bool) lane {
	_, prio := s.mu.priority[groupID]
	_, urgent := s.mu.urgent[groupID]
	s.m.QueueDepth.Inc()
	switch {
	case prio:
		s.mu.prio.push(groupID)
		return lanePrio
	case urgent || control || f&^controlWork == 0:
		s.mu.control.push(groupID)
		s.m.ControlQueueDepth.Inc()
		return laneControl
	default:
		s.mu.queue.push(groupID)
		return laneNormal
	}
}

// queuedLocked reports whether any group is queued.
func (s *Scheduler) queuedLocked() bool {
	return s.mu.prio.len()+s.mu.control.len()+s.mu.queue.len()-s.mu.stale > 0
}

// next takes the next group to process, waiting for one; ok is false once
// the scheduler is closed.
func (s *Scheduler) next() (groupID uint64, w Work, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.queuedLocked() {
		if s.mu.stopped {
			return 0, Work{}, false
		}
		s.workReady.Wait()
	}
	if s.mu.stopped {
		return 0, Work{}, false
	}
	groupID, w = s.takeLocked()
	return groupID, w, true
}

// takeLocked pops the next group (priority lane first, then control) and
// marks it as being processed.
func (s *Scheduler) takeLocked() (uint64, Work) {
	var groupID uint64
	switch {
	case s.mu.prio.len() > 0:
		groupID = s.mu.prio.pop()
	case s.mu.control.len() > 0:
		groupID = s.mu.control.pop()
		s.m.ControlQueueDepth.Dec()
	default:
		for {
			groupID = s.mu.queue.pop()
			if e := s.mu.groups[groupID]; e.queued && e.lane == laneNormal {
				break
			}
			s.mu.stale-- // moved to the control lane meanwhile
		}
	}
	s.m.QueueDepth.Dec()
	s.m.Processing.Inc()
	e := s.mu.groups[groupID]
	w := Work{Flags: e.flags, Ticks: e.ticks}
	s.m.QueueWait.Observe(time.Since(e.queuedAt).Seconds())
	e.flags, e.ticks, e.queued, e.processing = 0, 0, false, true
	s.mu.groups[groupID] = e
	return groupID, w
}

// done ends a group's processing: it is queued again at the back if flags
// were raised meanwhile, forgotten otherwise.
func (s *Scheduler) done(groupID uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.Processing.Dec()
	e := s.mu.groups[groupID]
	e.processing = false
	if e.flags == 0 {
		delete(s.mu.groups, groupID)
		return
	}
	e.queued = true
	e.queuedAt = time.Now()
	e.lane = s.pushLocked(groupID, e.flags, e.control)
	e.control = false
	s.mu.groups[groupID] = e
	s.workReady.Signal()
}

func (s *Scheduler) worker() {
	defer s.wg.Done()
	for {
		groupID, w, ok := s.next()
		if !ok {
			return
		}
		start := time.Now()
		s.proc.Process(groupID, w)
		s.m.ProcessDuration.Observe(time.Since(start).Seconds())
		s.m.Processed.Inc()
		s.done(groupID)
	}
}

// SetPriority puts a group in (or out of) the priority lane from its next
// queueing on.
func (s *Scheduler) SetPriority(groupID uint64, on bool) { s.mark(s.mu.priority, groupID, on) }

// SetUrgent puts a group in (or out of) the control lane whatever its
// work: the host marks groups that have no leader or hold an election, so
// that elections end fast under load. A group marked while it waits in
// the normal lane moves to the control lane; unmarking takes effect at
// its next queueing.
func (s *Scheduler) SetUrgent(groupID uint64, on bool) {
	s.mark(s.mu.urgent, groupID, on)
	if on {
		s.mu.Lock()
		s.promoteLocked(groupID)
		s.mu.Unlock()
	}
}

// mark adds a group to (or removes it from) one of the lane sets.
func (s *Scheduler) mark(set map[uint64]struct{}, groupID uint64, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		set[groupID] = struct{}{}
	} else {
		delete(set, groupID)
	}
}

// Remove forgets a group's priority, urgency and ticking. Work already queued for it
// is still handed to the processor, which must expect unknown groups.
func (s *Scheduler) Remove(groupID uint64) {
	s.SetPriority(groupID, false)
	s.SetUrgent(groupID, false)
	s.SetTicking(groupID, false)
}

// UrgentGroups reports how many groups are marked urgent (SetUrgent).
func (s *Scheduler) UrgentGroups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.urgent)
}
