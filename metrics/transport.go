package metrics

import "github.com/prometheus/client_golang/prometheus"

// Transport holds the collectors of a transport, labelled by peer node ID
// (never by group: a host has thousands).
type Transport struct {
	MessagesSent     *prometheus.CounterVec
	MessagesReceived *prometheus.CounterVec
	BatchesSent      *prometheus.CounterVec
	QueueDropped     *prometheus.CounterVec
	QueueMessages    *prometheus.GaugeVec
	FilterDropped    *prometheus.CounterVec
	SnapshotsSent    *prometheus.CounterVec
	SnapshotsFailed  *prometheus.CounterVec
}

// NewTransport creates the transport's collectors and registers them on reg
// (nil: unregistered).
func NewTransport(reg prometheus.Registerer) *Transport {
	const ns, sub = "flotilla", "transport"
	peer := []string{"peer"}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, peer)
	}
	m := &Transport{
		MessagesSent:     counter("messages_sent_total", "Raft messages handed to a peer."),
		MessagesReceived: counter("messages_received_total", "Raft messages received from a peer."),
		BatchesSent:      counter("batches_sent_total", "Batches (frames) sent to a peer."),
		QueueDropped:     counter("queue_dropped_total", "Messages dropped because a peer's send queue was full."),
		QueueMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_messages",
			Help: "Messages waiting in a peer's send queue."}, peer),
		FilterDropped:   counter("filter_dropped_total", "Messages dropped by a test filter (in-memory transport)."),
		SnapshotsSent:   counter("snapshots_sent_total", "Snapshots sent to a peer."),
		SnapshotsFailed: counter("snapshots_failed_total", "Snapshot sends to a peer that failed."),
	}
	if reg != nil {
		reg.MustRegister(m.MessagesSent, m.MessagesReceived, m.BatchesSent, m.QueueDropped, m.QueueMessages,
			m.FilterDropped, m.SnapshotsSent, m.SnapshotsFailed)
	}
	return m
}
