// Package metrics defines Flotilla's Prometheus collectors, one struct per
// subsystem (Store, ...), each created with the prometheus.Registerer the
// embedder passes in. Nothing registers on the global registry unless the
// embedder hands it over. No metric carries a per-group label: a host has
// thousands of groups.
//
// Collectors are plain fields: the code path a metric describes updates it
// directly, with no indirection on the hot path. The package runs no
// goroutines.
package metrics
