package clock

import (
	"testing"
	"time"
)

func TestManual(t *testing.T) {
	start := time.Unix(1000, 0)
	m := NewManual(start)
	tk := m.NewTicker(100 * time.Millisecond)
	m.Advance(50 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked early")
	default:
	}
	m.Advance(50 * time.Millisecond)
	if got := <-tk.C(); !got.Equal(start.Add(100 * time.Millisecond)) {
		t.Fatalf("tick at %v", got)
	}
	// A receiver that falls behind loses ticks instead of queueing them.
	m.Advance(100 * time.Millisecond)
	m.Advance(100 * time.Millisecond)
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("ticks queued up")
	default:
	}
	tk.Stop()
	m.Advance(time.Second)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker ticked")
	default:
	}
	if !m.Now().Equal(start.Add(1300 * time.Millisecond)) {
		t.Fatalf("now %v", m.Now())
	}
}
