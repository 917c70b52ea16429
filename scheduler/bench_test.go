package scheduler

import (
	"fmt"
	"sync"
	"testing"
)

// BenchmarkEnqueueProcess measures the scheduler's overhead per unit of
// work: producers raise flags on many groups and the workers take them; the
// processor does nothing.
func BenchmarkEnqueueProcess(b *testing.B) {
	for _, groups := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			var wg sync.WaitGroup
			s, err := New(Config{}, ProcessorFunc(func(uint64, Work) {}))
			if err != nil {
				b.Fatal(err)
			}
			s.Start()
			defer s.Close()
			b.ReportAllocs()
			b.ResetTimer()
			const producers = 4
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := p; i < b.N; i += producers {
						s.Enqueue(uint64(i%groups), Messages)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkTick measures one pass of the tick loop over 100,000 ticking
// groups, with nothing draining the queue (the worst case: every group
// gets queued).
func BenchmarkTick(b *testing.B) {
	s, err := New(Config{Workers: 1}, ProcessorFunc(func(uint64, Work) {}))
	if err != nil {
		b.Fatal(err)
	}
	for id := uint64(0); id < 100000; id++ {
		s.SetTicking(id, true)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.tick()
	}
}
