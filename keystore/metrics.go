package keystore

import "github.com/prometheus/client_golang/prometheus"

// metricsName names the key store's collectors among the shared ones: one
// set for every store in the process, so counters keep counting when Caddy
// swaps configs or a reload changes the database. Each config registers
// them in its own registry (Acquire).
const metricsName = "keystore"

// storeMetrics are the key store's Prometheus collectors. Labels are
// bounded enums: never an organization, a key or a database.
type storeMetrics struct {
	cacheHit, cacheMiss, cacheNegative, cacheStale prometheus.Counter

	pgLookup prometheus.Observer
	pgErrors prometheus.Counter

	shedNormal, shedUnverified prometheus.Counter
	inFlight                   prometheus.Gauge

	all []prometheus.Collector
}

func newStoreMetrics() *storeMetrics {
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "key_cache_total",
		Help: "Database key lookups by cache outcome: hit, negative (cached refusal), miss (went to PostgreSQL), stale (served from an outdated entry because PostgreSQL failed).",
	}, []string{"result"})
	lookup := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_lookup_seconds",
		Help:    "Latency of key lookups in PostgreSQL (cache misses).",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2},
	})
	pgErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_errors_total",
		Help: "Contacts with PostgreSQL that failed (unreachable, timeout, error).",
	})
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_lookups_shed_total",
		Help: "Key lookups not sent to PostgreSQL because their lane was full or no pool connection was free in time (503 for that request), by lane: normal (keys the key filter knows) or unverified (keys it does not: forged, or created a moment ago).",
	}, []string{"lane"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_lookups_in_flight",
		Help: "Key lookups holding a lane slot: being sent to PostgreSQL or answered by it.",
	})
	return &storeMetrics{
		cacheHit:       cache.WithLabelValues("hit"),
		cacheMiss:      cache.WithLabelValues("miss"),
		cacheNegative:  cache.WithLabelValues("negative"),
		cacheStale:     cache.WithLabelValues("stale"),
		pgLookup:       lookup,
		pgErrors:       pgErrors,
		shedNormal:     shed.WithLabelValues("normal"),
		shedUnverified: shed.WithLabelValues("unverified"),
		inFlight:       inFlight,
		all:            []prometheus.Collector{cache, lookup, pgErrors, shed, inFlight},
	}
}

// Collectors implements sharedmetrics.Set.
func (m *storeMetrics) Collectors() []prometheus.Collector { return m.all }
