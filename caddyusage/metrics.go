package caddyusage

import "github.com/prometheus/client_golang/prometheus"

// metrics are the pipeline's Prometheus collectors. They live as long as
// the pipeline, which is shared across reloads, and are registered in
// every config's registry. No label carries an organization or a key.
type metrics struct {
	emitted    prometheus.Counter
	delivered  *prometheus.CounterVec
	spooled    prometheus.Counter
	replayed   prometheus.Counter
	dropped    *prometheus.CounterVec
	corrupt    prometheus.Counter
	spoolBytes prometheus.Gauge
	sinkState  prometheus.Gauge
	sinkActive *prometheus.GaugeVec
}

func newMetrics() *metrics {
	const ns, sub = "tenantgate", "usage"
	m := &metrics{
		emitted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_emitted_total",
			Help: "Usage events emitted by tenant_usage (one per authenticated request)."}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_delivered_total",
			Help: "Usage events the sink acknowledged (kafka: the broker, acks=all; postgres: committed; memory: stored)."}, []string{"sink"}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_spooled_total",
			Help: "Usage events written to the disk spool (buffer full, or the sink failed or was too slow)."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_replayed_total",
			Help: "Usage events replayed from the disk spool and acknowledged by the sink."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_dropped_total",
			Help: "Usage events lost, by reason: spool_full (spool_size reached), spool_backlog (the spool writer fell behind), spool_error (disk write failed), memory_full (memory sink bound)."}, []string{"reason"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "spool_corrupt_records_total",
			Help: "Torn or corrupt spool records skipped (each ends the rest of its segment)."}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "spool_bytes",
			Help: "Bytes of events waiting in the disk spool."}),
		sinkState: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sink_state",
			Help: "The usage pipeline's state as /health/ready last saw it: 0 ok, 1 degraded (spooling), 2 down (dropping)."}),
		sinkActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sink_active",
			Help: "1 for the sink in use (kafka, postgres or memory)."}, []string{"sink"}),
	}
	for _, r := range []string{"spool_full", "spool_backlog", "spool_error", "memory_full"} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.emitted, m.delivered, m.spooled, m.replayed, m.dropped, m.corrupt, m.spoolBytes, m.sinkState, m.sinkActive}
}
