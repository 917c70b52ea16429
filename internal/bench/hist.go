package bench

import (
	"math/bits"
	"time"
)

// Histogram is a log-linear latency histogram (microseconds, 1/32 of a power
// of two per bucket: about 3% resolution), cheap enough for every
// proposer to keep its own and merge at the end.
type Histogram struct {
	counts [64 * 32]uint64
	n      uint64
}

func bucketOf(us uint64) int {
	if us < 32 {
		return int(us)
	}
	exp := 63 - bits.LeadingZeros64(us) // us in [2^exp, 2^(exp+1))
	sub := (us >> (exp - 5)) & 31
	return (exp-4)*32 + int(sub)
}

func lowerOf(b int) uint64 {
	if b < 32 {
		return uint64(b)
	}
	exp := b/32 + 4
	sub := uint64(b % 32)
	return (1 << exp) | sub<<(exp-5)
}

func (h *Histogram) Add(d time.Duration) {
	us := uint64(max(d.Microseconds(), 0))
	h.counts[bucketOf(us)]++
	h.n++
}

func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// Count returns how many samples were added.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the latency below which a fraction q of samples fall.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen > rank {
			return time.Duration(lowerOf(b)) * time.Microsecond
		}
	}
	return 0
}
