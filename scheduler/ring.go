package scheduler

// ring is a FIFO of group IDs that grows as needed. A group is in a run
// queue at most once, so a ring never holds more IDs than there are groups.
type ring struct {
	buf  []uint64
	head int
	n    int
}

func (r *ring) len() int { return r.n }

func (r *ring) push(v uint64) {
	if r.n == len(r.buf) {
		grown := make([]uint64, max(16, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

func (r *ring) pop() uint64 {
	v := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}
