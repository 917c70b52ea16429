package metrics

import "github.com/prometheus/client_golang/prometheus"

// Scheduler holds the collectors of the scheduler: its run queue, the
// groups its workers process, and the tick loop.
type Scheduler struct {
	QueueDepth        prometheus.Gauge
	ControlQueueDepth prometheus.Gauge
	Processing        prometheus.Gauge
	Processed         prometheus.Counter
	QueueWait         prometheus.Histogram
	ProcessDuration   prometheus.Histogram
	Ticks             prometheus.Counter
	TicksBehind       prometheus.Counter
	TickingGroups     prometheus.Gauge
}

// NewScheduler creates the scheduler's collectors, unregistered (see Register).
func NewScheduler() *Scheduler {
	const ns, sub = "flotilla", "scheduler"
	latency := prometheus.ExponentialBuckets(1e-6, 4, 12) // 1µs .. 4s
	m := &Scheduler{
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_depth",
			Help: "Groups waiting for a worker."}),
		ControlQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "control_queue_depth",
			Help: "Groups waiting in the control lane (served before ordinary work): only heartbeats, votes and ticks to process, or no leader."}),
		Processing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "processing",
			Help: "Groups being processed by a worker."}),
		Processed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "processed_total",
			Help: "Times a worker processed a group."}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "queue_wait_seconds",
			Help: "Time from a group being queued to a worker taking it.", Buckets: latency}),
		ProcessDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "process_duration_seconds",
			Help: "Time a worker spent processing a group.", Buckets: latency}),
		Ticks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ticks_total",
			Help: "Ticks of the host's tick loop."}),
		TicksBehind: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ticks_behind_total",
			Help: "Ticks the tick loop missed because it ran late."}),
		TickingGroups: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ticking_groups",
			Help: "Groups that receive ticks (not quiesced)."}),
	}
	return m
}

// Collectors implements Set.
func (m *Scheduler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.ControlQueueDepth, m.QueueDepth, m.Processing, m.Processed, m.QueueWait, m.ProcessDuration, m.Ticks, m.TicksBehind, m.TickingGroups}
}
