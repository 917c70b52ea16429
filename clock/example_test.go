package clock_test

import (
	"fmt"
	"time"

	"github.com/flotilla-io/flotilla/clock"
)

// ExampleManual: time that moves only when a test says, as every
// Flotilla test drives its hosts (multiraft.Config.Clock).
func ExampleManual() {
	start := time.Unix(1_700_000_000, 0)
	c := clock.NewManual(start)
	t := c.NewTicker(100 * time.Millisecond)
	defer t.Stop()

	c.Advance(250 * time.Millisecond) // two ticks due: a receiver that fell behind gets one
	<-t.C()
	select {
	case <-t.C():
		fmt.Println("a second tick")
	default:
		fmt.Println("one tick for", c.Now().Sub(start))
	}
	// Output: one tick for 250ms
}
