package metrics

import "github.com/prometheus/client_golang/prometheus"

// Transport holds the collectors of a transport, labelled by peer node ID
// (never by group: a host has thousands).
type Transport struct {
	MessagesSent        *prometheus.CounterVec
	MessagesReceived    *prometheus.CounterVec
	BytesSent           *prometheus.CounterVec
	BytesReceived       *prometheus.CounterVec
	FramesSent          *prometheus.CounterVec
	FramesReceived      *prometheus.CounterVec
	HeartbeatsCoalesced *prometheus.CounterVec
	QueueDropped        *prometheus.CounterVec
	QueueMessages       *prometheus.GaugeVec
	QueueHeartbeats     *prometheus.GaugeVec
	QueueControl        *prometheus.GaugeVec
	LivenessSent        *prometheus.CounterVec
	LivenessReceived    *prometheus.CounterVec
	SendFailures        *prometheus.CounterVec
	Reconnects          *prometheus.CounterVec
	StreamUp            *prometheus.GaugeVec
	ReceivedDropped     *prometheus.CounterVec // peer, reason
	FilterDropped       *prometheus.CounterVec
	SnapshotsSent       *prometheus.CounterVec
	SnapshotsReceived   *prometheus.CounterVec
	SnapshotsFailed     *prometheus.CounterVec
	SnapshotBytesSent   *prometheus.CounterVec
	SnapshotBytesRecv   *prometheus.CounterVec
	HandshakesRefused   *prometheus.CounterVec // reason
	Flushes             prometheus.Counter
	ConnectionsOpen     prometheus.Gauge
}

// NewTransport creates the transport's collectors, unregistered (see Register).
func NewTransport() *Transport {
	const ns, sub = "flotilla", "transport"
	peer := []string{"peer"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		if labels == nil {
			labels = peer
		}
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, peer)
	}
	m := &Transport{
		MessagesSent:        counter("messages_sent_total", "Raft messages sent to a peer (coalesced heartbeats included)."),
		MessagesReceived:    counter("messages_received_total", "Raft messages received from a peer (coalesced heartbeats included)."),
		BytesSent:           counter("bytes_sent_total", "Encoded bytes of the frames sent to a peer."),
		BytesReceived:       counter("bytes_received_total", "Encoded bytes of the frames received from a peer."),
		FramesSent:          counter("frames_sent_total", "Frames (batches of many groups' messages) sent to a peer."),
		FramesReceived:      counter("frames_received_total", "Frames received from a peer."),
		HeartbeatsCoalesced: counter("heartbeats_coalesced_total", "Heartbeats and heartbeat responses sent to a peer packed into coalesced frames."),
		QueueDropped:        counter("queue_dropped_total", "Messages to a peer dropped because its send queue was full or the peer was down."),
		QueueMessages:       gauge("queue_messages", "Messages waiting in a peer's send queue."),
		QueueHeartbeats:     gauge("queue_heartbeats", "Plain heartbeats in a peer's send queue waiting for the next frame or flush."),
		QueueControl: gauge("queue_control_messages", "Messages in a peer's control lane (heartbeats and their responses, votes, "+
			"pre-votes, timeout-now), which go ahead of the data lane."),
		LivenessSent:      counter("liveness_sent_total", "Liveness records sent to a peer: frames that say only that this node is alive, sent at a tick when nothing else went."),
		LivenessReceived:  counter("liveness_received_total", "Liveness records received from a peer."),
		SendFailures:      counter("send_failures_total", "Frames to a peer that could not be sent (their messages are reported unreachable)."),
		Reconnects:        counter("reconnects_total", "Streams to a peer opened again after a failure."),
		StreamUp:          gauge("stream_up", "1 while the outgoing Raft stream to a peer is up."),
		ReceivedDropped:   counter("received_dropped_total", "Inbound messages or frames from a peer dropped as malformed or misaddressed.", "peer", "reason"),
		FilterDropped:     counter("filter_dropped_total", "Messages dropped by a fault-injection filter (tests)."),
		SnapshotsSent:     counter("snapshots_sent_total", "Snapshots sent to a peer and accepted."),
		SnapshotsReceived: counter("snapshots_received_total", "Snapshots received whole from a peer and accepted."),
		SnapshotsFailed:   counter("snapshots_failed_total", "Snapshot sends to a peer that failed."),
		SnapshotBytesSent: counter("snapshot_bytes_sent_total", "Snapshot data bytes sent to a peer."),
		SnapshotBytesRecv: counter("snapshot_bytes_received_total", "Snapshot data bytes received from a peer."),
		HandshakesRefused: counter("handshakes_refused_total", "Inbound connections and calls refused, by reason: tls (the TLS handshake), "+
			"connection_limit, no_handshake, cluster_id, wrong_node, bad_sender, unknown_peer (not in the peer set), "+
			"protocol_version, tls_identity (the certificate does not name the node, or is no longer good).", "reason"),
		ConnectionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections_open",
			Help: "Inbound connections open on the peer server (bounded by its connection limit)."}),
		Flushes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "heartbeat_flushes_total",
			Help: "Heartbeat flushes: each releases the plain heartbeats waiting for every peer."}),
	}
	return m
}

// InitPeer creates a peer's series at zero, so they exist from the moment
// the peer is configured rather than from its first event.
func (m *Transport) InitPeer(peer string) {
	for _, c := range []*prometheus.CounterVec{m.MessagesSent, m.MessagesReceived, m.BytesSent, m.BytesReceived,
		m.FramesSent, m.FramesReceived, m.HeartbeatsCoalesced, m.QueueDropped, m.SendFailures, m.Reconnects,
		m.FilterDropped, m.SnapshotsSent, m.SnapshotsReceived, m.SnapshotsFailed, m.SnapshotBytesSent, m.SnapshotBytesRecv,
		m.LivenessSent, m.LivenessReceived} {
		c.WithLabelValues(peer)
	}
	for _, g := range []*prometheus.GaugeVec{m.QueueMessages, m.QueueHeartbeats, m.QueueControl, m.StreamUp} {
		g.WithLabelValues(peer)
	}
}

// Collectors implements Set.
func (m *Transport) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.MessagesSent, m.MessagesReceived, m.BytesSent, m.BytesReceived, m.FramesSent, m.FramesReceived,
		m.HeartbeatsCoalesced, m.QueueDropped, m.QueueMessages, m.QueueHeartbeats, m.SendFailures, m.Reconnects,
		m.StreamUp, m.ReceivedDropped, m.FilterDropped, m.SnapshotsSent, m.SnapshotsReceived, m.SnapshotsFailed,
		m.SnapshotBytesSent, m.SnapshotBytesRecv, m.HandshakesRefused, m.Flushes, m.QueueControl, m.LivenessSent, m.LivenessReceived,
		m.ConnectionsOpen}
}
