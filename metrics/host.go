package metrics

import "github.com/prometheus/client_golang/prometheus"

// Host holds the collectors of the multiraft host.
type Host struct {
	Groups              prometheus.Gauge
	Leaders             prometheus.Gauge
	LeaderChanges       prometheus.Counter
	LeadershipsAcquired prometheus.Counter
	GroupsByRole        *prometheus.GaugeVec // label role: leader, follower, candidate, pre-candidate
	Elections           prometheus.Counter
	ReadIndexDuration   prometheus.Histogram
	Proposals           *prometheus.CounterVec // label result: ok, rejected, ambiguous, busy, no_space, not_leader, error
	ProposeDuration     prometheus.Histogram
	ApplyDuration       prometheus.Histogram
	ProposalBytes       prometheus.Gauge
	InboxBytes          prometheus.Gauge
	InboxDropped        prometheus.Counter
	StagingBytes        prometheus.Gauge
	SnapshotsRefused    *prometheus.CounterVec // label reason: no_room, invalid, failed
	MessagesDropped     *prometheus.CounterVec // label reason (see its help)
	RequestsRefused     *prometheus.CounterVec // label request: read, transfer, membership
	RequestsWaiting     *prometheus.GaugeVec   // label request: read, transfer
	GroupsFailed        prometheus.Gauge
	DiskSpaceAlarm      prometheus.Gauge
	DiskFreeBytes       prometheus.Gauge
	DiskFullErrors      prometheus.Counter
	QuiescedGroups      prometheus.Gauge
	ProposalsInFlight   prometheus.Gauge
	AdmissionRefused    prometheus.Counter
	EventsDropped       prometheus.Counter
	Wakeups             *prometheus.CounterVec // label cause: request, message, leader_down, peer_up, quorum, raft
	PeerLive            *prometheus.GaugeVec   // label peer
	PeerTransitions     *prometheus.CounterVec // label peer, to: live, dead
}

// NewHost creates the host's collectors, unregistered (see Register).
func NewHost() *Host {
	const ns, sub = "flotilla", "host"
	latency := prometheus.ExponentialBuckets(50e-6, 2, 18) // 50µs .. 6.5s
	m := &Host{
		Groups:        prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "groups", Help: "Groups hosted."}),
		Leaders:       prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "leaders", Help: "Groups led by this host and serving."}),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "leader_changes_total", Help: "Leader changes seen by this host's groups."}),
		LeadershipsAcquired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "leaderships_acquired_total",
			Help: "Times this host became a group's serving leader: summed over the hosts, a cluster's leader changes, each counted once."}),
		GroupsByRole: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "groups_by_role",
			Help: "Groups hosted, by the role of their replica here."}, []string{"role"}),
		Elections: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "elections_total",
			Help: "Elections (pre-votes included) started by this host's replicas."}),
		ReadIndexDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "read_index_duration_seconds",
			Help: "Time from ReadIndex to the local state reflecting the read index.", Buckets: latency}),
		Proposals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "proposals_total",
			Help: "Proposals by result."}, []string{"result"}),
		ProposeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "propose_duration_seconds",
			Help: "Time from Propose to its acknowledgement.", Buckets: latency}),
		ApplyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "apply_duration_seconds",
			Help: "Time to apply one batch of committed entries.", Buckets: latency}),
		ProposalBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "proposal_bytes",
			Help: "Bytes of proposals queued or pending on this host."}),
		InboxBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inbox_bytes",
			Help: "Bytes of inbound messages queued for groups and of refused appends waiting for the log writer."}),
		StagingBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "snapshot_staging_bytes",
			Help: "Disk bytes reserved for snapshots being received or waiting to be installed (bounded by SnapshotStagingBytes)."}),
		SnapshotsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "snapshots_refused_total",
			Help: "Inbound snapshots this host refused or lost, by reason: no_room (staging budget or disk space, refused before any data moved), " +
				"invalid (bad header or data), failed (the stream broke or staging failed)."}, []string{"reason"}),
		InboxDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "inbox_dropped_total",
			Help: "Inbound messages dropped because a group's inbox or the host's inbox budget was full."}),
		MessagesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_dropped_total",
			Help: "Inbound messages dropped by reason: unknown_group, stale_replica, removed_replica, closed_group; " +
				"sender_mismatch, sender_unverified (not from the node that hosts the replica it names), " +
				"commit_beyond_log, index_beyond_log, malformed, unexpected_type (what raft would panic on or misread), " +
				"notice_unverified (a removal notice not from a voter's own node)."}, []string{"reason"}),
		RequestsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_refused_total",
			Help: "Reads, leadership transfers and membership changes refused (ErrBusy) because their group had as many waiting as it may."}, []string{"request"}),
		RequestsWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "requests_waiting",
			Help: "Reads and leadership transfers taken and not yet answered (each group holds at most MaxGroupProposals of a kind)."}, []string{"request"}),
		ProposalsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "proposals_in_flight",
			Help: "Proposals admitted and not yet answered (bounded by MaxProposalsInFlight)."}),
		AdmissionRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "admission_refused_total",
			Help: "Proposals refused at once (ErrBusy with a retry hint) because the host held as many in flight, or as many bytes, as it may."}),
		EventsDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_dropped_total",
			Help: "Events a subscription (Host.Subscribe) lost because its buffer was full: its reader is behind."}),
		QuiescedGroups: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "quiesced_groups",
			Help: "Groups quiesced here: idle, not ticked, sending nothing."}),
		Wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "wakeups_total",
			Help: "Quiesced groups woken, by cause: request (proposal, read, transfer, membership change), message (from a peer), " +
				"leader_down (the leader's node stopped being live), peer_up (a lagging follower's node is live again), " +
				"quorum (a leader lost a live quorum), raft (a response or completion left raft work), " +
				"asked (a follower woke its leader, or a gone leader replica's host woke its followers)."}, []string{"cause"}),
		PeerLive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "peer_live",
			Help: "1 while a peer node is live (heard from within the election timeout), 0 once not."}, []string{"peer"}),
		PeerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "peer_liveness_changes_total",
			Help: "Times a peer node became live or stopped being live."}, []string{"peer", "to"}),
		GroupsFailed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "groups_failed",
			Help: "Groups whose replica here failed alone (a panic while stepping or applying) and is no longer processed."}),
		DiskSpaceAlarm: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "disk_space_alarm",
			Help: "1 while the data directory's disk is short of space and new writes are refused."}),
		DiskFreeBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "disk_free_bytes",
			Help: "Free bytes of the data directory's disk, as last checked."}),
		DiskFullErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disk_full_errors_total",
			Help: "Writes that failed for lack of space (ENOSPC)."}),
	}
	for _, role := range []string{"leader", "follower", "candidate", "pre-candidate"} {
		m.GroupsByRole.WithLabelValues(role)
	}
	for _, request := range []string{"read", "transfer", "membership"} {
		m.RequestsRefused.WithLabelValues(request)
	}
	for _, request := range []string{"read", "transfer"} {
		m.RequestsWaiting.WithLabelValues(request)
	}
	for _, result := range []string{"ok", "rejected", "ambiguous", "busy", "no_space", "not_leader", "error"} {
		m.Proposals.WithLabelValues(result)
	}
	for _, reason := range []string{"no_room", "invalid", "failed"} {
		m.SnapshotsRefused.WithLabelValues(reason) // every reason shows, at 0 until it happens
	}
	return m
}

// Collectors implements Set.
func (m *Host) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Groups, m.Leaders, m.LeaderChanges, m.LeadershipsAcquired, m.GroupsByRole, m.Elections, m.ReadIndexDuration,
		m.Proposals, m.ProposeDuration, m.ApplyDuration,
		m.ProposalBytes, m.InboxBytes, m.InboxDropped, m.StagingBytes, m.SnapshotsRefused, m.MessagesDropped, m.RequestsRefused, m.RequestsWaiting, m.GroupsFailed,
		m.DiskSpaceAlarm, m.DiskFreeBytes, m.DiskFullErrors, m.QuiescedGroups, m.ProposalsInFlight, m.AdmissionRefused, m.EventsDropped, m.Wakeups, m.PeerLive, m.PeerTransitions}
}
