package bench

import (
	"math"
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

// TestBucketsQuantile: a window's quantile comes from the buckets that
// moved in it, as the bucket's upper bound.
func TestBucketsQuantile(t *testing.T) {
	earlier := buckets{upper: []float64{0.001, 0.002, 0.004}, cum: []uint64{10, 10, 10}, count: 10}
	later := buckets{upper: earlier.upper, cum: []uint64{10, 60, 109}, count: 110}
	var all buckets
	all.merge(later.since(earlier))
	all.merge(later.since(earlier)) // a second host with the same
	if all.count != 200 {
		t.Fatalf("count %d, want 200", all.count)
	}
	for q, want := range map[float64]float64{0.5: 0.002, 0.99: 0.004, 0.25: 0.002} {
		if got := all.quantile(q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if got := (buckets{}).quantile(0.5); got != 0 {
		t.Errorf("quantile of nothing = %v, want 0", got)
	}
	beyond := buckets{upper: []float64{0.001}, cum: []uint64{1}, count: 3} // two past the last bound
	if got := beyond.quantile(0.99); !math.IsInf(got, 1) || millis(got) != -1 {
		t.Errorf("quantile beyond the bounds = %v (%v ms), want +Inf (-1 ms)", got, millis(got))
	}
}
