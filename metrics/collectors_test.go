package metrics

import (
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCollectorsListEveryField: every collector field of a set is in
// its Collectors list, or Register leaves it unregistered.
func TestCollectorsListEveryField(t *testing.T) {
	for name, s := range map[string]Set{"Host": NewHost(), "Store": NewStore(), "Scheduler": NewScheduler(), "Transport": NewTransport()} {
		listed := map[prometheus.Collector]bool{}
		for _, c := range s.Collectors() {
			listed[c] = true
		}
		v := reflect.ValueOf(s).Elem()
		for i := 0; i < v.NumField(); i++ {
			c, ok := v.Field(i).Interface().(prometheus.Collector)
			if ok && !listed[c] {
				t.Errorf("%s.%s is not in Collectors()", name, v.Type().Field(i).Name)
			}
		}
	}
}
