package bench

import (
	"math"
	"math/bits"
	"time"

	dto "github.com/prometheus/client_model/go"
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

// buckets is a Prometheus histogram's cumulative bucket counts (several
// series summed), to take quantiles of what a window observed.
type buckets struct {
	upper []float64 // upper bounds, ascending (+Inf last, implied)
	cum   []uint64
	count uint64
}

// add sums the histograms of metrics into h (all with the same bounds).
func (h *buckets) add(metrics []*dto.Metric) {
	for _, m := range metrics {
		hist := m.GetHistogram()
		if hist == nil {
			continue
		}
		// Only the finite bounds: a scrape lists +Inf, a Gather implies it
		// (the count covers it either way).
		if h.upper == nil {
			for _, b := range hist.GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) {
					h.upper = append(h.upper, b.GetUpperBound())
				}
			}
			h.cum = make([]uint64, len(h.upper))
		}
		for j, b := range hist.GetBucket() {
			if j < len(h.cum) && !math.IsInf(b.GetUpperBound(), 1) {
				h.cum[j] += b.GetCumulativeCount()
			}
		}
		h.count += hist.GetSampleCount()
	}
}

// merge adds d (a histogram with the same bounds) to h.
func (h *buckets) merge(d buckets) {
	if h.upper == nil {
		h.upper, h.cum = d.upper, make([]uint64, len(d.cum))
	}
	for j := range d.cum {
		if j < len(h.cum) {
			h.cum[j] += d.cum[j]
		}
	}
	h.count += d.count
}

// since returns what h observed after earlier (the same histogram read
// before).
func (h buckets) since(earlier buckets) buckets {
	d := buckets{upper: h.upper, cum: make([]uint64, len(h.cum)), count: h.count - earlier.count}
	for j := range h.cum {
		d.cum[j] = h.cum[j]
		if j < len(earlier.cum) {
			d.cum[j] -= earlier.cum[j]
		}
	}
	return d
}

// quantile returns the upper bound of the bucket holding quantile q (an
// upper estimate; 0 if nothing was observed, +Inf if it lies beyond the
// last finite bound).
func (h buckets) quantile(q float64) float64 {
	if h.count == 0 || len(h.upper) == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.count)))
	for j, c := range h.cum {
		if c >= rank {
			return h.upper[j]
		}
	}
	return math.Inf(1)
}

// millis converts a quantile to milliseconds for a report: -1 stands for
// beyond the histogram's range (JSON has no infinity).
func millis(q float64) float64 {
	if math.IsInf(q, 1) {
		return -1
	}
	return q * 1e3
}
