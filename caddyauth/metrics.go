package caddyauth

import "github.com/prometheus/client_golang/prometheus"

// metricsName names tenant_auth's collectors among the shared ones: one
// set for the process, so counters survive reloads. The key store's cache
// and PostgreSQL metrics are package keystore's, shared the same way.
const metricsName = "tenant_auth"

// authMetrics are tenant_auth's Prometheus metrics. Labels are bounded
// enums: never an org or a key. Counters are resolved once, so counting
// allocates nothing.
type authMetrics struct {
	resultsVec *prometheus.CounterVec
	results    [resultKinds]prometheus.Counter
}

func newAuthMetrics() *authMetrics {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantgate", Subsystem: "auth", Name: "requests_total",
		Help: "Requests seen by tenant_auth, by result: ok, unauthorized (401), forbidden (403), unavailable (503).",
	}, []string{"result"})
	return &authMetrics{
		resultsVec: vec,
		results: [resultKinds]prometheus.Counter{
			resultOK:           vec.WithLabelValues("ok"),
			resultUnauthorized: vec.WithLabelValues("unauthorized"),
			resultForbidden:    vec.WithLabelValues("forbidden"),
			resultUnavailable:  vec.WithLabelValues("unavailable"),
		},
	}
}

// Collectors implements sharedmetrics.Set.
func (m *authMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.resultsVec}
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
