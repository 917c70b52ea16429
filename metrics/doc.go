// Package metrics defines Flotilla's Prometheus collectors, one struct per
// subsystem (Host, Store, Scheduler, Transport), each created unregistered
// and registered, all or none, by Register on the prometheus.Registerer
// the embedder passes in (a multiraft host labels its series with its node
// ID, so several hosts share a registry). A duplicate registration is an
// error, never a panic, and Register returns what unregisters them.
// Nothing registers on the global registry unless the embedder hands it
// over. No metric carries a per-group label: a host has thousands of
// groups.
//
// Collectors are plain fields: the code path a metric describes updates it
// directly, with no indirection on the hot path. The package runs no
// goroutines.
package metrics
