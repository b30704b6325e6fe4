package caddyauth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// authMetrics are tenant_auth's Prometheus metrics, registered in Caddy's
// metrics registry. Labels are bounded enums: never an org or a key.
// Counters are resolved at provision time, so counting allocates nothing.
type authMetrics struct {
	results [resultKinds]prometheus.Counter

	cacheHit, cacheMiss, cacheNegative, cacheStale prometheus.Counter

	pgLookup prometheus.Observer
	pgErrors prometheus.Counter
}

func newCollectors() (results, cache *prometheus.CounterVec, lookup prometheus.Histogram, pgErrors prometheus.Counter) {
	results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "requests_total",
		Help: "Requests seen by tenant_auth, by result: ok, unauthorized (401), forbidden (403), unavailable (503).",
	}, []string{"result"})
	cache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "key_cache_total",
		Help: "Database key lookups by cache outcome: hit, negative (cached refusal), miss (went to PostgreSQL), stale (served from an outdated entry because PostgreSQL failed).",
	}, []string{"result"})
	lookup = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_lookup_seconds",
		Help:    "Latency of key lookups in PostgreSQL (cache misses).",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2},
	})
	pgErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "postgres_errors_total",
		Help: "Key lookups in PostgreSQL that failed (unreachable, timeout, error).",
	})
	return results, cache, lookup, pgErrors
}

// newAuthMetrics registers the metrics in reg, reusing collectors that
// another tenant_auth of the same config registered already.
func newAuthMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	results, cache, lookup, pgErrors := newCollectors()
	var err error
	if results, err = register(reg, results); err != nil {
		return nil, err
	}
	if cache, err = register(reg, cache); err != nil {
		return nil, err
	}
	if lookup, err = register(reg, lookup); err != nil {
		return nil, err
	}
	if pgErrors, err = register(reg, pgErrors); err != nil {
		return nil, err
	}
	return resolveMetrics(results, cache, lookup, pgErrors), nil
}

// newAuthMetricsUnregistered is for stores built outside a config (tests).
func newAuthMetricsUnregistered() *authMetrics {
	return resolveMetrics(newCollectors())
}

func resolveMetrics(results, cache *prometheus.CounterVec, lookup prometheus.Histogram, pgErrors prometheus.Counter) *authMetrics {
	return &authMetrics{
		results: [resultKinds]prometheus.Counter{
			resultOK:           results.WithLabelValues("ok"),
			resultUnauthorized: results.WithLabelValues("unauthorized"),
			resultForbidden:    results.WithLabelValues("forbidden"),
			resultUnavailable:  results.WithLabelValues("unavailable"),
		},
		cacheHit:      cache.WithLabelValues("hit"),
		cacheMiss:     cache.WithLabelValues("miss"),
		cacheNegative: cache.WithLabelValues("negative"),
		cacheStale:    cache.WithLabelValues("stale"),
		pgLookup:      lookup,
		pgErrors:      pgErrors,
	}
}

// resultKind is the outcome of one request at tenant_auth.
type resultKind int

const (
	resultOK resultKind = iota
	resultUnauthorized
	resultForbidden
	resultUnavailable
	resultKinds
)

// countResult counts a request's outcome (nothing if metrics are not set up).
func (m *authMetrics) countResult(k resultKind) {
	if m != nil {
		m.results[k].Inc()
	}
}

// register registers c, or returns the equal collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
