package caddyratelimit

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metricsName names the limiter's collectors among the shared ones: one
// set for the process, so counters survive reloads.
const metricsName = "tenant_ratelimit"

// result is the outcome label of the decisions metric.
type result uint8

const (
	resultAllowed result = iota
	resultDeniedMinute
	resultDeniedDay
	resultUnavailable // on_redis_error deny while Redis is down: 503
	numResults
)

var resultNames = [numResults]string{"allowed", "denied_minute", "denied_day", "unavailable"}

// metrics are the limiter's Prometheus collectors. No label carries an
// organization or key: their number is unbounded.
type metrics struct {
	decisions      *prometheus.CounterVec
	redisErrors    prometheus.Counter
	redisDuration  prometheus.Histogram
	fallbackActive prometheus.Gauge

	mu    sync.Mutex
	plans map[string]*planCounters
}

func newMetrics() *metrics {
	const ns, sub = "tenantgate", "ratelimit"
	return &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decisions_total",
			Help: "Rate-limit decisions by plan, result (allowed, denied_minute, denied_day, unavailable) and source (redis, local, fallback, fast_path, fail_open).",
		}, []string{"plan", "result", "source"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "redis_errors_total",
			Help: "Redis calls of the limiter that failed or timed out.",
		}),
		redisDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "redis_duration_seconds",
			Help:    "Duration of the limiter's Redis calls (one EVALSHA per decision), failed ones included.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		fallbackActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "fallback_active",
			Help: "Number of Redis servers the limiter currently treats as failing (on_redis_error applies).",
		}),
		plans: make(map[string]*planCounters),
	}
}

// Collectors implements sharedmetrics.Set.
func (m *metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.decisions, m.redisErrors, m.redisDuration, m.fallbackActive}
}

// forPlan returns the plan's counters, shared by all policies of the plan.
func (m *metrics) forPlan(plan string) *planCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	pc := m.plans[plan]
	if pc == nil {
		pc = &planCounters{vec: m.decisions, plan: plan}
		m.plans[plan] = pc
	}
	return pc
}

// planCounters resolves the decision counters of one plan on first use, so
// counting a decision does no label lookup and creates no series that
// never occur.
type planCounters struct {
	vec  *prometheus.CounterVec
	plan string
	c    [numResults][numSources]atomic.Pointer[counterBox]
}

type counterBox struct{ prometheus.Counter }

func (pc *planCounters) inc(r result, s decisionSource) {
	slot := &pc.c[r][s]
	b := slot.Load()
	if b == nil {
		b = &counterBox{pc.vec.WithLabelValues(pc.plan, resultNames[r], s.String())}
		slot.Store(b)
	}
	b.Inc()
}
