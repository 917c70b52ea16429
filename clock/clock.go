// Package clock is the time seam of a Flotilla host: the tick loop and
// every timeout read time through a Clock, so tests drive time by hand
// (Manual) instead of depending on wall-clock ticks on a loaded machine.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and makes tickers.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker delivers ticks like time.Ticker: a receiver that falls behind
// misses ticks rather than queueing them.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Manual is a clock that moves only when told to. Its tickers fire during
// Advance, at most once per call each, like a time.Ticker whose receiver
// fell behind.
type Manual struct {
	mu struct {
		sync.Mutex
		now     time.Time
		tickers []*manualTicker
	}
}

// NewManual returns a manual clock set to start.
func NewManual(start time.Time) *Manual {
	m := &Manual{}
	m.mu.now = start
	return m
}

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.now
}

// Advance moves the clock forward by d and fires every ticker that is due.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	m.mu.now = m.mu.now.Add(d)
	now := m.mu.now
	live := m.mu.tickers[:0]
	for _, t := range m.mu.tickers {
		if t.stopped {
			continue
		}
		live = append(live, t)
		if !now.Before(t.next) {
			for !now.Before(t.next) {
				t.next = t.next.Add(t.period)
			}
			select {
			case t.ch <- now:
			default: // the receiver is behind: the tick is lost
			}
		}
	}
	m.mu.tickers = live
	m.mu.Unlock()
}

// NewTicker returns a ticker that fires every d of manual time.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTicker{m: m, period: d, next: m.mu.now.Add(d), ch: make(chan time.Time, 1)}
	m.mu.tickers = append(m.mu.tickers, t)
	return t
}

type manualTicker struct {
	m       *Manual
	period  time.Duration
	next    time.Time
	ch      chan time.Time
	stopped bool // guarded by m.mu
}

func (t *manualTicker) C() <-chan time.Time { return t.ch }

func (t *manualTicker) Stop() {
	t.m.mu.Lock()
	t.stopped = true
	t.m.mu.Unlock()
}
