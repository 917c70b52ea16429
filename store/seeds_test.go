package store

import (
	"flag"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// Randomized tests run a fixed set of seeds in `make test`; `make soak`
// sets FLOTILLA_SOAK_SEEDS to run that many fresh ones; -seed replays one.
var seedFlag = flag.Uint64("seed", 0, "replay randomized tests with this seed")

func testSeeds(t *testing.T, fixed ...uint64) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	if n, _ := strconv.Atoi(os.Getenv("FLOTILLA_SOAK_SEEDS")); n > 0 {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
		seeds := make([]uint64, n)
		for i := range seeds {
			seeds[i] = r.Uint64()
		}
		return seeds
	}
	return fixed
}

// forEachSeed runs fn in a subtest per seed and says how to replay a failure.
func forEachSeed(t *testing.T, fixed []uint64, fn func(t *testing.T, seed uint64)) {
	for _, seed := range testSeeds(t, fixed...) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replay with: go test -tags pebblegozstd ./store -run '%s' -seed %d", t.Name(), seed)
				}
			})
			fn(t, seed)
		})
	}
}

// seedRange returns the seeds [lo, hi).
func seedRange(lo, hi uint64) []uint64 {
	var seeds []uint64
	for s := lo; s < hi; s++ {
		seeds = append(seeds, s)
	}
	return seeds
}
