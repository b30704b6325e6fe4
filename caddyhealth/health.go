// Package caddyhealth provides tenant_health, the gateway's health
// endpoints: /health (summary), /health/live (the process is up) and
// /health/ready (each dependency's state, as the modules registered their
// checks with the config's tenant.Registry). Only "down" answers 503: a
// degraded gateway still serves, so a load balancer keeps sending it
// traffic.
package caddyhealth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	caddy.RegisterModule(Health{})
	httpcaddyfile.RegisterHandlerDirective("tenant_health", parseCaddyfile)
	// Before any auth, so health probes never need a key.
	httpcaddyfile.RegisterDirectiveOrder("tenant_health", httpcaddyfile.Before, "basic_auth")
}

// Health answers the health endpoints. It is terminal: it never calls the
// next handler. A request path ending in /live or /ready gets that probe;
// any other path under the handler gets the summary.
type Health struct {
	// Timeout bounds how long /health and /health/ready wait for all
	// dependency checks together. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	registry *tenant.Registry
	started  time.Time
}

// CaddyModule returns the Caddy module information.
func (Health) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_health",
		New: func() caddy.Module { return new(Health) },
	}
}

// Provision obtains the config's registry, where modules register their
// dependency checks.
func (h *Health) Provision(ctx caddy.Context) error {
	reg, err := tenant.RegistryFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_health: %w", err)
	}
	h.registry = reg
	h.started = time.Now()
	if h.Timeout <= 0 {
		h.Timeout = caddy.Duration(2 * time.Second)
	}
	return nil
}

type liveBody struct {
	Status tenant.Status `json:"status"`
}

type summaryBody struct {
	Status        tenant.Status `json:"status"`
	Timestamp     string        `json:"timestamp"`
	UptimeSeconds int64         `json:"uptime_seconds"`
}

type readyBody struct {
	Status    tenant.Status                 `json:"status"`
	Timestamp string                        `json:"timestamp"`
	Checks    map[string]tenant.CheckResult `json:"checks"`
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return tenant.WriteError(w, http.StatusMethodNotAllowed, "method not allowed", nil, "")
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.HasSuffix(path, "/live"):
		return writeJSON(w, http.StatusOK, liveBody{Status: tenant.StatusOK})
	case strings.HasSuffix(path, "/ready"):
		report := h.run(r.Context())
		return writeJSON(w, statusCode(report.Status), readyBody{
			Status:    report.Status,
			Timestamp: now(),
			Checks:    report.Checks,
		})
	default:
		report := h.run(r.Context())
		return writeJSON(w, statusCode(report.Status), summaryBody{
			Status:        report.Status,
			Timestamp:     now(),
			UptimeSeconds: int64(time.Since(h.started).Seconds()),
		})
	}
}

func (h *Health) run(ctx context.Context) tenant.HealthReport {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.Timeout))
	defer cancel()
	return h.registry.CheckHealth(ctx)
}

// statusCode is 503 only when the gateway cannot serve (down); degraded
// (a dependency fails and a fallback serves) is still 200.
func statusCode(s tenant.Status) int {
	if s == tenant.StatusDown {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	tenant_health [<matcher>] {
//	    timeout <duration>
//	}
func (h *Health) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "tenant_health"
	d.Next() // directive name
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return err
	}
	once := caddyfileutil.NewOnce(directive)
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "timeout":
			h.Timeout, err = caddyfileutil.Duration(d, directive, "2s")
		default:
			return caddyfileutil.Unknown(d, directive, "timeout")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Health)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Health)(nil)
	_ caddyhttp.MiddlewareHandler = (*Health)(nil)
	_ caddyfile.Unmarshaler       = (*Health)(nil)
)
