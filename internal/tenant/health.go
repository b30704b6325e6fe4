package tenant

import (
	"context"
	"sort"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(new(HealthApp))
}

// Status of a dependency as /health/ready reports it.
type Status string

// Dependency states, from best to worst.
const (
	// StatusOK: the dependency answers.
	StatusOK Status = "ok"
	// StatusDegraded: the dependency is failing and a fallback is in use
	// (stale cache, in-process limiter…); the gateway still serves.
	StatusDegraded Status = "degraded"
	// StatusDown: the gateway cannot serve what depends on it.
	StatusDown Status = "down"
)

func (s Status) rank() int {
	switch s {
	case StatusOK:
		return 0
	case StatusDegraded:
		return 1
	default:
		return 2
	}
}

// CheckResult is one dependency's state.
type CheckResult struct {
	Status Status `json:"status"`
	// Detail says what is wrong or which fallback is in use.
	Detail string `json:"detail,omitempty"`
}

// Check reports a dependency's state. It must answer quickly and must not
// block on the dependency for longer than ctx allows.
type Check func(ctx context.Context) CheckResult

// HealthApp is the per-config registry that Tenantgate modules add their
// dependency checks to, and that tenant_health reads. It is a Caddy app so
// that each config load (and reload) gets a fresh registry without any
// package-level state. It needs no configuration: modules obtain it with
// ctx.App(HealthAppID).
type HealthApp struct {
	mu     sync.RWMutex
	checks map[string]Check
}

// HealthAppID is the app's module ID.
const HealthAppID = "tenantgate_health"

// CaddyModule returns the Caddy module information.
func (*HealthApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  HealthAppID,
		New: func() caddy.Module { return new(HealthApp) },
	}
}

// Start implements caddy.App.
func (*HealthApp) Start() error { return nil }

// Stop implements caddy.App.
func (*HealthApp) Stop() error { return nil }

// Register adds (or replaces) the check with the given name.
func (a *HealthApp) Register(name string, check Check) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.checks == nil {
		a.checks = make(map[string]Check)
	}
	a.checks[name] = check
}

// HealthReport is the result of running every registered check.
type HealthReport struct {
	Status Status                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
}

// Run runs every check and folds them into the worst status.
func (a *HealthApp) Run(ctx context.Context) HealthReport {
	a.mu.RLock()
	names := make([]string, 0, len(a.checks))
	for name := range a.checks {
		names = append(names, name)
	}
	checks := make([]Check, len(names))
	sort.Strings(names)
	for i, name := range names {
		checks[i] = a.checks[name]
	}
	a.mu.RUnlock()

	report := HealthReport{Status: StatusOK, Checks: make(map[string]CheckResult, len(names))}
	for i, name := range names {
		res := checks[i](ctx)
		report.Checks[name] = res
		if res.Status.rank() > report.Status.rank() {
			report.Status = res.Status
		}
	}
	return report
}

// HealthFromContext returns the config's health registry.
func HealthFromContext(ctx caddy.Context) (*HealthApp, error) {
	app, err := ctx.App(HealthAppID)
	if err != nil {
		return nil, err
	}
	return app.(*HealthApp), nil
}

// Interface guard
var _ caddy.App = (*HealthApp)(nil)
