package scheduler_test

import (
	"fmt"

	"github.com/flotilla-io/flotilla/scheduler"
)

// ExampleNew: a pool of workers drives groups that have work flagged; a
// group is processed by one worker at a time and costs nothing while it
// has no flag raised.
func ExampleNew() {
	done := make(chan string, 2)
	s, err := scheduler.New(scheduler.DefaultConfig(), scheduler.ProcessorFunc(func(group uint64, w scheduler.Work) {
		done <- fmt.Sprintf("group %d: %v", group, w.Flags)
	}))
	if err != nil {
		panic(err)
	}
	s.Start()
	defer s.Close()
	s.Enqueue(7, scheduler.Requests)
	fmt.Println(<-done)
	// Output: group 7: requests
}
