// Package testseed runs randomized tests over seeds: a fixed set in
// `make test`, FLOTILLA_SOAK_SEEDS fresh ones in `make soak`, or the one
// given with -seed to replay a failure. Every subtest is named by its seed
// and a failing one prints the command that replays it.
package testseed

import (
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "replay randomized tests with this seed")

// Seeds returns the seeds to run: -seed, else FLOTILLA_SOAK_SEEDS fresh
// ones, else fixed.
func Seeds(fixed ...uint64) []uint64 {
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

// Range returns the seeds [lo, hi).
func Range(lo, hi uint64) []uint64 {
	var seeds []uint64
	for s := lo; s < hi; s++ {
		seeds = append(seeds, s)
	}
	return seeds
}

// Run runs fn in a subtest per seed.
func Run(t *testing.T, fixed []uint64, fn func(t *testing.T, seed uint64)) {
	for _, seed := range Seeds(fixed...) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replay with: go test -tags pebblegozstd ./%s -run '%s' -seed %d", pkgDir(), t.Name(), seed)
				}
			})
			fn(t, seed)
		})
	}
}

// pkgDir names the package under test relative to the module root, for
// the replay line.
func pkgDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "..."
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			rel, err := filepath.Rel(dir, wd)
			if err != nil {
				return "..."
			}
			return rel
		}
		if filepath.Dir(dir) == dir {
			return "..."
		}
	}
}
