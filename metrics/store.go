package metrics

import "github.com/prometheus/client_golang/prometheus"

// Store holds the collectors of the store package: the log writer (the one
// synced write path shared by every group), the apply path, the entry cache
// and snapshot installs.
type Store struct {
	WriterBatches          prometheus.Counter
	WriterItems            prometheus.Counter
	WriterEntries          prometheus.Counter
	WriterBytes            prometheus.Counter
	WriterItemsPerBatch    prometheus.Histogram
	WriterBytesPerBatch    prometheus.Histogram
	SyncDuration           prometheus.Histogram
	WriterQueueItems       prometheus.Gauge
	WriterQueueBytes       prometheus.Gauge
	WriterRejected         prometheus.Counter
	ApplyBatches           prometheus.Counter
	Truncations            prometheus.Counter
	SnapshotsInstalled     prometheus.Counter
	EntryCacheHits         prometheus.Counter
	EntryCacheMisses       prometheus.Counter
	EntryCacheBytes        prometheus.Gauge
	Failed                 prometheus.Gauge
	PebbleWriteStalls      prometheus.Counter
	PebbleWriteStallTime   prometheus.Counter
	PebbleBackgroundErrors prometheus.Counter
	ApplyBytes             prometheus.Counter
	PebbleFlushedBytes     prometheus.Counter
	PebbleCompactedBytes   prometheus.Counter
}

// NewStore creates the store's collectors, unregistered (see Register):
// they count all the same, nobody scrapes them.
func NewStore() *Store {
	const ns, sub = "flotilla", "store"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, Buckets: buckets})
	}
	m := &Store{
		WriterBatches:          counter("log_batches_total", "Synced batches committed by the log writer."),
		WriterItems:            counter("log_items_total", "Append, truncation and lifecycle items committed by the log writer."),
		WriterEntries:          counter("log_entries_total", "Raft log entries committed by the log writer."),
		WriterBytes:            counter("log_bytes_total", "Bytes of Pebble batches committed by the log writer."),
		WriterItemsPerBatch:    histogram("log_batch_items", "Items per log writer batch.", prometheus.ExponentialBuckets(1, 2, 16)),
		WriterBytesPerBatch:    histogram("log_batch_bytes", "Bytes per log writer batch.", prometheus.ExponentialBuckets(256, 4, 10)),
		SyncDuration:           histogram("log_sync_duration_seconds", "Time from applying a log writer batch to its WAL sync returning.", prometheus.ExponentialBuckets(50e-6, 2, 20)), // to 26 s: past a stall's threshold
		WriterQueueItems:       gauge("log_queue_items", "Items waiting for the log writer."),
		WriterQueueBytes:       gauge("log_queue_bytes", "Bytes waiting for the log writer."),
		WriterRejected:         counter("log_queue_rejected_total", "Items refused because the log writer queue was full."),
		ApplyBatches:           counter("apply_batches_total", "Unsynced apply batches committed."),
		Truncations:            counter("log_truncations_total", "Log truncations committed."),
		SnapshotsInstalled:     counter("snapshots_installed_total", "Snapshots ingested over a group's replica span."),
		EntryCacheHits:         counter("entry_cache_hits_total", "Entries and Term lookups served wholly from the entry cache."),
		EntryCacheMisses:       counter("entry_cache_misses_total", "Entries and Term lookups that read Pebble."),
		EntryCacheBytes:        gauge("entry_cache_bytes", "Bytes held by the entry cache."),
		Failed:                 gauge("failed", "1 once the store has failed (fail-stop)."),
		PebbleWriteStalls:      counter("pebble_write_stalls_total", "Pebble write stalls begun."),
		PebbleWriteStallTime:   counter("pebble_write_stall_seconds_total", "Time Pebble spent with writes stalled."),
		PebbleBackgroundErrors: counter("pebble_background_errors_total", "Failed Pebble flushes and compactions (Pebble retries them; a full disk shows here first)."),
		ApplyBytes:             counter("apply_bytes_total", "Bytes of Pebble batches committed by applies (with log_bytes_total: what the WAL takes)."),
		PebbleFlushedBytes:     counter("pebble_flushed_bytes_total", "Bytes of the tables Pebble's memtable flushes wrote."),
		PebbleCompactedBytes:   counter("pebble_compacted_bytes_total", "Bytes of the tables Pebble's compactions wrote."),
	}
	return m
}

// Collectors implements Set.
func (m *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.WriterBatches, m.WriterItems, m.WriterEntries, m.WriterBytes,
		m.WriterItemsPerBatch, m.WriterBytesPerBatch, m.SyncDuration,
		m.WriterQueueItems, m.WriterQueueBytes, m.WriterRejected,
		m.ApplyBatches, m.Truncations, m.SnapshotsInstalled,
		m.EntryCacheHits, m.EntryCacheMisses, m.EntryCacheBytes,
		m.Failed, m.PebbleWriteStalls, m.PebbleWriteStallTime, m.PebbleBackgroundErrors,
		m.ApplyBytes, m.PebbleFlushedBytes, m.PebbleCompactedBytes}
}
