package metrics_test

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/metrics"
)

// ExampleRegister: a subsystem's collectors are plain fields, registered
// all or none on the embedder's registry (a multiraft host does this
// itself from Config.Registerer, labelled with its node).
func ExampleRegister() {
	reg := prometheus.NewRegistry()
	h := metrics.NewHost()
	unregister, err := metrics.Register(prometheus.WrapRegistererWith(prometheus.Labels{"node": "1"}, reg), h)
	if err != nil {
		panic(err)
	}
	h.Leaders.Set(3)
	_, err = metrics.Register(prometheus.WrapRegistererWith(prometheus.Labels{"node": "1"}, reg), metrics.NewHost())
	fmt.Println("registered twice:", err != nil)

	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "flotilla_host_leaders" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	unregister()
	families, _ = reg.Gather()
	fmt.Println("after unregister:", len(families), "families")
	// Output:
	// registered twice: true
	// flotilla_host_leaders 3
	// after unregister: 0 families
}
