package bench

import (
	"testing"
	"time"
)

// TestHist: quantiles come back within the histogram's resolution.
func TestHist(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if got < c.want*96/100 || got > c.want*104/100 {
			t.Errorf("q%v = %s, want about %s", c.q, got, c.want)
		}
	}
	for us := uint64(0); us < 1<<20; us += 7 {
		if b := bucketOf(us); lowerOf(b) > us || (b+1 < len(h.counts) && lowerOf(b+1) <= us) {
			t.Fatalf("%dµs in bucket %d [%d, %d)", us, b, lowerOf(b), lowerOf(b+1))
		}
	}
}
