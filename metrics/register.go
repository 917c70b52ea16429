package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Set is one subsystem's collectors.
type Set interface {
	Collectors() []prometheus.Collector
}

// Register registers every collector of the sets on reg, all or none, and
// returns what unregisters them. A collector already registered there (a
// second host on one registry, without a label that tells them apart) is
// an error, not a panic.
func Register(reg prometheus.Registerer, sets ...Set) (unregister func(), err error) {
	var done []prometheus.Collector
	unregister = func() {
		for _, c := range done {
			reg.Unregister(c)
		}
	}
	for _, s := range sets {
		for _, c := range s.Collectors() {
			if err := reg.Register(c); err != nil {
				unregister()
				return nil, fmt.Errorf("metrics: %w", err)
			}
			done = append(done, c)
		}
	}
	return unregister, nil
}
