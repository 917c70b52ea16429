package partition

import (
	"math/rand/v2"
	"testing"

	"github.com/flotilla-io/flotilla/multiraft"
)

// TestGarbageCommands: random bytes (starting like a produce
// request, a configure or a trim command) never make Apply fail or panic,
// and the log keeps serving.
func TestGarbageCommands(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	h := newHarness(t, DefaultConfig())
	for i := 0; i < 3000; i++ {
		b := make([]byte, rng.IntN(24))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		if len(b) > 0 {
			b[0] = []byte{1, 2, 3}[rng.IntN(3)]
		}
		h.index++
		h.run([]multiraft.Command{{Index: h.index, Data: b}})
		if i%7 == 0 {
			h.apply([]*Produce{{TimestampMs: uint64(i), Records: recs("x", 2)}})
		}
	}
	bo := h.bounds()
	if _, _, err := h.log.Fetch(bo.Start, 1<<20, 1<<30); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.log.RetentionTarget(1 << 62); err != nil {
		t.Fatal(err)
	}
}
