package multiraft_test

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// TestHostsShareARegistry: hosts of one process share a registry, their
// series (the transport's included) told apart by a node label; a host
// registered twice is an error, not a panic; Close unregisters.
func TestHostsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	net := transport.NewNetwork()
	start := func(node multiraft.NodeID) (*multiraft.Host, error) {
		cfg := hostConfig(vfs.NewMem(), net, node)
		cfg.Registerer = reg
		h, err := multiraft.NewHost(cfg)
		if err != nil {
			_ = cfg.Transport.Close()
		}
		return h, err
	}
	h1, err := start(1)
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	h2, err := start(2)
	if err != nil {
		t.Fatalf("a second host on the registry: %v", err)
	}
	defer h2.Close()
	if err := h1.CreateGroup(7, []multiraft.NodeID{1, 2}); err != nil {
		t.Fatal(err)
	}
	if got := series(t, reg, "flotilla_host_groups"); got["1"] != 1 || got["2"] != 0 || len(got) != 2 {
		t.Fatalf("flotilla_host_groups by node: %v", got)
	}
	if got := series(t, reg, "flotilla_transport_heartbeat_flushes_total"); len(got) != 2 {
		t.Fatalf("the transports' series by node: %v, want both nodes", got)
	}
	if _, err := start(1); !errors.Is(err, multiraft.ErrInvalid) {
		t.Fatalf("node 1 registered twice: %v, want ErrInvalid", err)
	}
	if err := h2.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"flotilla_host_groups", "flotilla_store_log_batches_total", "flotilla_transport_heartbeat_flushes_total"} {
		if got := series(t, reg, name); len(got) != 1 || got["2"] != 0 {
			t.Fatalf("%s after node 2 closed: %v, want node 1's only", name, got)
		}
	}
	// The closed host's place is free again.
	h2, err = start(2)
	if err != nil {
		t.Fatalf("node 2 again after Close: %v", err)
	}
	defer h2.Close()
}

// series returns a metric's value by its node label (summed over other
// labels).
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "node" {
					out[l.GetValue()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}
