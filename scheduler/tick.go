package scheduler

import (
	"time"

	"github.com/flotilla-io/flotilla/clock"
)

// SetTicking adds a group to (or removes it from) the set the tick loop
// ticks. A quiesced group is taken out and costs nothing per tick.
func (s *Scheduler) SetTicking(groupID uint64, on bool) {
	s.ticking.Lock()
	defer s.ticking.Unlock()
	i, ticking := s.ticking.pos[groupID]
	switch {
	case on && !ticking:
		s.ticking.pos[groupID] = len(s.ticking.ids)
		s.ticking.ids = append(s.ticking.ids, groupID)
		s.m.TickingGroups.Inc()
	case !on && ticking:
		last := len(s.ticking.ids) - 1
		moved := s.ticking.ids[last]
		s.ticking.ids[i] = moved
		s.ticking.pos[moved] = i
		s.ticking.ids = s.ticking.ids[:last]
		delete(s.ticking.pos, groupID)
		s.m.TickingGroups.Dec()
	}
}

// Ticking reports whether the group receives ticks.
func (s *Scheduler) Ticking(groupID uint64) bool {
	s.ticking.Lock()
	defer s.ticking.Unlock()
	_, ok := s.ticking.pos[groupID]
	return ok
}

// tickChunk is how many groups are ticked per scheduler lock acquisition,
// so that a tick of 100,000 groups does not hold the run queue's lock for
// the whole pass.
const tickChunk = 1024

func (s *Scheduler) tickLoop(t clock.Ticker, last time.Time) {
	defer s.wg.Done()
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C():
			if behind := int64(now.Sub(last)/s.cfg.TickInterval) - 1; behind > 0 {
				s.m.TicksBehind.Add(float64(behind))
			}
			last = now
			s.tick()
		}
	}
}

// tick raises the Tick flag of every ticking group. The tick is counted
// once every flag is up, so a count that moved means the work is queued.
func (s *Scheduler) tick() {
	defer s.m.Ticks.Inc()
	if s.cfg.OnTick != nil {
		s.cfg.OnTick()
	}
	var chunk [tickChunk]uint64
	for start := 0; ; start += tickChunk {
		s.ticking.Lock()
		n := copy(chunk[:], s.ticking.ids[min(start, len(s.ticking.ids)):])
		s.ticking.Unlock()
		if n == 0 {
			return
		}
		s.EnqueueMany(chunk[:n], Tick)
	}
}
