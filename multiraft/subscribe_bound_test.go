package multiraft_test

import (
	"math"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
)

// TestSubscribeBufferBounded (from a review): Subscribe took its buffer
// size from the caller with a floor (1) and no ceiling: make(chan Event,
// buffer) panicked for a size the runtime refuses, and allocated the
// whole buffer up front for one it accepts (Subscribe(1<<30) asked about
// 100 GiB). Every buffer has a bound, and bad input no panic.
func TestSubscribeBufferBounded(t *testing.T) {
	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1})
	h := c.Host(1)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Subscribe(math.MaxInt) panicked: %v", p)
		}
	}()
	for _, n := range []int{math.MaxInt, 1 << 30} {
		s := h.Subscribe(n)
		if c := cap(s.Events()); c != 1<<16 {
			t.Fatalf("Subscribe(%d): a buffer of %d events, want the bound 65536", n, c)
		}
		s.Close()
	}
}
