package keystore

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// acquire is Acquire for a test: the handle is released at the end.
func acquire(t *testing.T, cfg Config) *Handle {
	t.Helper()
	h, err := Acquire(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Release() })
	return h
}

// TestDroppedConfigKeepsTheRunningSettings plays Caddy's lifecycle with
// the health app, which Caddy starts only for a committed config: config
// A runs, config B shares its database and is provisioned, then dropped
// (a failed reload, `caddy validate`) without starting.
func TestDroppedConfigKeepsTheRunningSettings(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	appA := new(tenant.Registry)
	a := acquire(t, Config{DatabaseURL: dsn, Settings: Settings{CacheSize: 100_000}})
	appA.OnStart(a.Activate)
	if err := appA.Start(); err != nil {
		t.Fatal(err)
	}
	s := a.Store()
	capacity := func() int { return s.keys.capacity() }
	if got := capacity(); got != 100_032 { // rounded up to a multiple of 64
		t.Fatalf("running config's cache holds %d, want 100032", got)
	}

	appB := new(tenant.Registry)
	b, err := Acquire(Config{DatabaseURL: dsn, Settings: Settings{CacheSize: 64, CacheTTL: 1}})
	if err != nil {
		t.Fatal(err)
	}
	appB.OnStart(b.Activate)
	if b.Store() != s {
		t.Fatal("configs with the same database do not share the store")
	}
	if got := capacity(); got != 100_032 {
		t.Errorf("after provisioning config B: cache holds %d, want A's 100032", got)
	}
	if err := b.Release(); err != nil { // dropped without Start
		t.Fatal(err)
	}
	if got, ttl := capacity(), s.Settings().CacheTTL; got != 100_032 || ttl != defaultCacheTTL {
		t.Errorf("after dropping config B: cache holds %d with TTL %s, want A's 100032 and %s", got, ttl, defaultCacheTTL)
	}

	// A reload that commits: C's settings apply when it starts, and stay
	// when A is cleaned up; had C failed after starting, A's come back.
	appC := new(tenant.Registry)
	c := acquire(t, Config{DatabaseURL: dsn, Settings: Settings{CacheSize: 5000}})
	appC.OnStart(c.Activate)
	if got := capacity(); got != 100_032 {
		t.Errorf("config C provisioned, not started: cache holds %d, want 100032", got)
	}
	if err := appC.Start(); err != nil {
		t.Fatal(err)
	}
	if got := capacity(); got != 5056 {
		t.Errorf("config C started: cache holds %d, want 5056", got)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if got := capacity(); got != 100_032 {
		t.Errorf("config C released after starting: cache holds %d, want A's 100032 back", got)
	}
}

// counterValue reads a counter from a registry; -1 if it is not there.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabel(m, label, value) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, name, value string) bool {
	if name == "" {
		return true
	}
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMetricsSurviveAReload(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a, err := Acquire(Config{DatabaseURL: dsn, Metrics: regA})
	if err != nil {
		t.Fatal(err)
	}
	const missName = "tenantgate_auth_key_cache_total"
	before := counterValue(t, regA, missName, "result", "miss")
	for range 3 {
		_, _ = a.Lookup(context.Background(), HashKey(randomKey(t)))
	}
	// The reload: B is provisioned (a registry of its own) on another
	// database, so it gets a store of its own too; A is cleaned up. Only
	// the shared metrics carry A's count over.
	b := acquire(t, Config{DatabaseURL: testenv.MigratedDatabase(t), Metrics: regB})
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Lookup(context.Background(), HashKey(randomKey(t)))
	if got := counterValue(t, regB, missName, "result", "miss"); got < before+4 {
		t.Errorf("misses counted in the new config's registry: %v, want at least %v (the old config's 3 kept)", got, before+4)
	}
}
