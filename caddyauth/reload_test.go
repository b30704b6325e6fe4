package caddyauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/keystore"
)

// requestsCounted reads tenantgate_auth_requests_total{result} from a
// config's registry.
func requestsCounted(t *testing.T, reg prometheus.Gatherer, result string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "tenantgate_auth_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// provisioned is a tenant_auth with one static key, provisioned in a
// caddy.Context of its own (a config: its own metrics registry).
func provisioned(t *testing.T) (*TenantAuth, caddy.Context, context.CancelFunc) {
	t.Helper()
	base, err := caddy.ProvisionContext(nil) // a config, as Caddy provisions handlers in
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(base)
	a := &TenantAuth{Keys: []StaticKey{{Key: "sk_test_reload", OrgID: "org_1", Plan: "basic"}}}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return a, ctx, cancel
}

func serve(t *testing.T, a *TenantAuth, auth string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "http://gateway/", nil)
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	_ = a.ServeHTTP(httptest.NewRecorder(), r, nopHandler{})
}

func TestAuthMetricsSurviveAReload(t *testing.T) {
	old, oldCtx, cancelOld := provisioned(t)
	before := requestsCounted(t, oldCtx.GetMetricsRegistry(), "ok")
	for range 3 {
		serve(t, old, "Bearer sk_test_reload")
	}
	serve(t, old, "")

	// The reload: the new config is provisioned, then the old one cleaned up.
	next, nextCtx, cancelNext := provisioned(t)
	defer cancelNext()
	cancelOld()
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	serve(t, next, "Bearer sk_test_reload")
	defer func() { _ = next.Cleanup() }()

	reg := nextCtx.GetMetricsRegistry()
	if got := requestsCounted(t, reg, "ok"); got != before+4 {
		t.Errorf("requests_total{result=ok} after the reload = %v, want %v (3 before it, 1 after)", got, before+4)
	}
	if got := requestsCounted(t, reg, "unauthorized"); got < 1 {
		t.Errorf("requests_total{result=unauthorized} after the reload = %v, want the one before it", got)
	}
}

// gatewayConfig is a Caddy JSON config with one tenant_auth on dsn.
func gatewayConfig(t *testing.T, dsn string, cacheSize int) []byte {
	t.Helper()
	handler := map[string]any{"handler": "tenant_auth", "database_url": dsn, "cache_size": cacheSize}
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gw": map[string]any{
			"listen": []string{"127.0.0.1:0"},
			"routes": []any{map[string]any{"handle": []any{handler}}},
		}}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestValidatedConfigDoesNotChangeTheRunningOne runs a real Caddy config on
// a database, then validates another one on the same database with a tiny
// cache (provisioned and dropped, as `caddy validate` or a failed reload
// does): the running config's cache settings stay.
func TestValidatedConfigDoesNotChangeTheRunningOne(t *testing.T) {
	dsn := testenv.FreshDatabase(t)
	if err := caddy.Load(gatewayConfig(t, dsn, 100_000), true); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()
	probe, err := keystore.Acquire(keystore.Config{DatabaseURL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = probe.Release() }()
	if got := probe.Store().Settings().CacheSize; got != 100_000 {
		t.Fatalf("running config's cache_size = %d, want 100000", got)
	}

	var dropped caddy.Config
	if err := json.Unmarshal(gatewayConfig(t, dsn, 64), &dropped); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&dropped); err != nil {
		t.Fatal(err)
	}
	if got := probe.Store().Settings().CacheSize; got != 100_000 {
		t.Errorf("after validating a config with cache_size 64: %d, want the running 100000", got)
	}

	if err := caddy.Load(gatewayConfig(t, dsn, 5000), true); err != nil {
		t.Fatal(err)
	}
	if got := probe.Store().Settings().CacheSize; got != 5000 {
		t.Errorf("after reloading with cache_size 5000: %d", got)
	}
}
