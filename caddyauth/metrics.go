package caddyauth

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsPool shares one set of collectors across config reloads, so
// counters keep counting when Caddy swaps configs (each config has its own
// registry; the collectors are registered with every one). The key
// store's cache and PostgreSQL metrics are package keystore's, shared the
// same way.
var metricsPool = caddy.NewUsagePool()

const metricsPoolKey = "tenant_auth"

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

// Destruct implements caddy.Destructor.
func (*authMetrics) Destruct() error { return nil }

// Interface guard
var _ caddy.Destructor = (*authMetrics)(nil)

// acquireAuthMetrics returns the shared collectors, registered in reg;
// each call is matched by a releaseAuthMetrics (Cleanup).
func acquireAuthMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	val, _, err := metricsPool.LoadOrNew(metricsPoolKey, func() (caddy.Destructor, error) {
		return newAuthMetrics(), nil
	})
	if err != nil {
		return nil, err
	}
	m := val.(*authMetrics)
	if err := reg.Register(m.resultsVec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) || are.ExistingCollector != m.resultsVec {
			_ = releaseAuthMetrics()
			return nil, err
		}
	}
	return m, nil
}

func releaseAuthMetrics() error {
	_, err := metricsPool.Delete(metricsPoolKey)
	return err
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
