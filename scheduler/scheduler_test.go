package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/flotilla-io/flotilla/clock"
	"github.com/flotilla-io/flotilla/internal/await"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var flagNames = map[string]Flags{"messages": Messages, "requests": Requests, "tick": Tick, "storage": Storage, "control": Control}

// TestSchedulerTranscript walks testdata/: the scheduler's queueing rules
// driven step by step, with no workers running. Commands:
//
//	enqueue g= flags=(..) [urgent]  raise flags (urgent: EnqueueUrgent)
//	next                      a worker takes the next group
//	done g=                   a worker finishes a group
//	ticking g= [off]          (un)mark a group for ticks
//	priority g= [off]         (un)mark a system group
//	urgent g= [off]           (un)mark a group for the control lane
//	tick                      one pass of the tick loop
//	queue                     the lanes, front first
func TestSchedulerTranscript(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s, err := New(Config{Workers: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			var g uint64
			d.MaybeScanArgs(t, "g", &g)
			switch d.Cmd {
			case "enqueue":
				var names []string
				d.ScanArgs(t, "flags", &names)
				var f Flags
				for _, n := range names {
					f |= flagNames[n]
				}
				if d.HasArg("urgent") {
					s.EnqueueUrgent([]uint64{g}, f)
				} else {
					s.Enqueue(g, f)
				}
				return describeQueues(s)
			case "next":
				s.mu.Lock()
				defer s.mu.Unlock()
				if !s.queuedLocked() {
					return "nothing queued"
				}
				id, w := s.takeLocked()
				return fmt.Sprintf("g%d %s ticks=%d", id, w.Flags, w.Ticks)
			case "done":
				s.done(g)
				return describeQueues(s)
			case "ticking":
				s.SetTicking(g, !d.HasArg("off"))
				return "ok"
			case "priority":
				s.SetPriority(g, !d.HasArg("off"))
				return "ok"
			case "urgent":
				s.SetUrgent(g, !d.HasArg("off"))
				return "ok"
			case "tick":
				s.tick()
				return describeQueues(s)
			case "queue":
				return describeQueues(s)
			}
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		})
	})
}

func describeQueues(s *Scheduler) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lane := func(r ring, normal bool) string {
		var ids []string
		for i := 0; i < r.n; i++ {
			id := r.buf[(r.head+i)%len(r.buf)]
			e := s.mu.groups[id]
			if normal && (!e.queued || e.lane != laneNormal) {
				ids = append(ids, fmt.Sprintf("(g%d moved)", id))
				continue
			}
			ids = append(ids, fmt.Sprintf("g%d(%s)", id, e.flags))
		}
		return strings.Join(ids, " ")
	}
	var busy []string
	for id, e := range s.mu.groups {
		if e.processing {
			busy = append(busy, fmt.Sprintf("g%d(%s)", id, e.flags))
		}
	}
	slices.Sort(busy)
	return fmt.Sprintf("prio: [%s]\ncontrol: [%s]\nqueue: [%s]\nprocessing: %v", lane(s.mu.prio, false), lane(s.mu.control, false), lane(s.mu.queue, true), busy)
}

// TestNeverTwoWorkers: with many workers and producers, a group is never
// processed by two workers at once, and every flag raised is delivered.
func TestNeverTwoWorkers(t *testing.T) {
	const groups, producers, perProducer = 50, 4, 2000
	var inUse [groups]atomic.Int32
	var delivered [groups]atomic.Int64 // bit per flag seen
	var violations atomic.Int32
	s, err := New(Config{Workers: 8}, ProcessorFunc(func(id uint64, w Work) {
		if inUse[id].Add(1) != 1 {
			violations.Add(1)
		}
		delivered[id].Or(int64(w.Flags))
		inUse[id].Add(-1)
	}))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perProducer; i++ {
				s.Enqueue(uint64((p*perProducer+i)%groups), Messages)
			}
		}()
	}
	wg.Wait()
	// The last Enqueue of each group must be delivered after it happened.
	for id := range groups {
		s.Enqueue(uint64(id), Storage)
	}
	for id := range groups {
		waitUntil(t, fmt.Sprintf("group %d's Storage flag", id), func() bool { return delivered[id].Load()&int64(Storage) != 0 })
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d times a group was processed by two workers at once", v)
	}
}

// TestTickLoop: on a manual clock, one tick raises Tick on every ticking
// group; a group stuck in a slow Process does not hold back other groups'
// ticks, and receives the ticks it missed when it comes back; a loop that
// falls behind counts the ticks it lost.
func TestTickLoop(t *testing.T) {
	const groups = 1000
	clk := clock.NewManual(time.Unix(0, 0))
	var ticks [groups]atomic.Int64
	release := make(chan struct{})
	stuck := make(chan struct{}, 1)
	s, err := New(Config{Workers: 2, TickInterval: 100 * time.Millisecond, Clock: clk}, ProcessorFunc(func(id uint64, w Work) {
		if w.Flags&Tick != 0 {
			ticks[id].Add(int64(w.Ticks))
		}
		if id == 0 && w.Flags&Requests != 0 {
			stuck <- struct{}{}
			<-release // group 0 is slow
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	for id := range groups {
		s.SetTicking(uint64(id), true)
	}
	s.Start()
	defer s.Close()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // before Close, even when the test fails
	s.Enqueue(0, Requests)
	<-stuck
	for round := int64(1); round <= 3; round++ {
		clk.Advance(100 * time.Millisecond)
		waitUntil(t, fmt.Sprintf("tick %d at every group but the slow one", round), func() bool {
			for id := 1; id < groups; id++ {
				if ticks[id].Load() != round {
					return false
				}
			}
			return true
		})
	}
	if ticks[0].Load() != 0 {
		t.Fatal("the stuck group was processed twice at once")
	}
	unblock()
	waitUntil(t, "the slow group to get its 3 ticks", func() bool { return ticks[0].Load() == 3 })

	// A tick arriving 5 intervals after the last counts 4 as lost.
	clk.Advance(500 * time.Millisecond)
	waitUntil(t, "the late tick", func() bool { return ticks[1].Load() == 4 })
	if behind := testutil.ToFloat64(s.m.TicksBehind); behind != 4 {
		t.Fatalf("ticks behind %v, want 4", behind)
	}
	// Groups taken out of ticking get no more ticks.
	s.SetTicking(1, false)
	clk.Advance(100 * time.Millisecond)
	waitUntil(t, "tick 5", func() bool { return ticks[2].Load() == 5 })
	if ticks[1].Load() != 4 {
		t.Fatal("a group that stopped ticking got a tick")
	}
	if g := testutil.ToFloat64(s.m.TickingGroups); g != groups-1 {
		t.Fatalf("ticking groups gauge %v", g)
	}
}

// TestPriorityLane: system groups are served before queued normal groups.
func TestPriorityLane(t *testing.T) {
	var order []uint64
	var mu sync.Mutex
	gate := make(chan struct{})
	s, err := New(Config{Workers: 1}, ProcessorFunc(func(id uint64, w Work) {
		if id == 100 {
			<-gate
		}
		mu.Lock()
		order = append(order, id)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	s.SetPriority(7, true)
	s.Start()
	defer s.Close()
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	defer open()             // before Close, even when the test fails
	s.Enqueue(100, Messages) // occupies the only worker
	waitUntil(t, "the worker to take group 100", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.mu.groups[100].processing
	})
	for _, id := range []uint64{1, 2, 7, 3} {
		s.Enqueue(id, Messages)
	}
	open()
	waitUntil(t, "all five groups", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 5
	})
	if fmt.Sprint(order) != "[100 7 1 2 3]" {
		t.Fatalf("processed in order %v, want the system group first", order)
	}
}

// TestCloseStopsEverything: Close returns with every goroutine gone (the
// leak check in TestMain), and Enqueue after it reports false.
func TestCloseStopsEverything(t *testing.T) {
	s, err := New(Config{Workers: 3, TickInterval: time.Millisecond}, ProcessorFunc(func(uint64, Work) {}))
	if err != nil {
		t.Fatal(err)
	}
	s.SetTicking(1, true)
	s.Start()
	s.Enqueue(1, Messages)
	s.Close()
	s.Close()
	if s.Enqueue(1, Messages) {
		t.Fatal("Enqueue after Close accepted work")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.Until(t, 10*time.Second, what, cond)
}
