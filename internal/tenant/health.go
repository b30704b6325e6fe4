package tenant

import (
	"context"
	"slices"
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
//
// Being an app, it is also the config's commit point: Caddy starts it only
// once the config is provisioned and about to replace the running one.
// Modules defer to OnStart what must not happen for a config that is
// provisioned and then dropped (a failed reload, `caddy validate`).
type HealthApp struct {
	mu     sync.RWMutex
	deps   []dependency
	starts []func()
}

// Interface guard
var _ caddy.App = (*HealthApp)(nil)

// dependency is one registered check of one dependency.
type dependency struct {
	kind, target string
	check        Check
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

// Start implements caddy.App: it runs the OnStart functions, in the order
// they were added.
func (a *HealthApp) Start() error {
	a.mu.RLock()
	starts := a.starts
	a.mu.RUnlock()
	for _, f := range starts {
		f()
	}
	return nil
}

// Stop implements caddy.App.
func (*HealthApp) Stop() error { return nil }

// OnStart adds f to what runs when the config is started (committed).
func (a *HealthApp) OnStart(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starts = append(a.starts, f)
}

// RegisterDependency adds the check of a dependency of some kind
// ("postgres", "redis") at target (such as "db.internal:5432/keys" or
// "127.0.0.1:6379"; never a password). /health/ready names a check after
// its kind when the config uses one target of that kind, and
// "kind:target" when it uses several, so two databases are two checks.
// Checks registered for the same kind and target (two handlers sharing a
// database) are one check: the worse of their results.
func (a *HealthApp) RegisterDependency(kind, target string, check Check) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deps = append(a.deps, dependency{kind: kind, target: target, check: check})
}

// Register adds a check named name (a dependency with no target). Checks
// registered under one name are one check: the worse of their results.
func (a *HealthApp) Register(name string, check Check) {
	a.RegisterDependency(name, "", check)
}

// HealthReport is the result of running every registered check.
type HealthReport struct {
	Status Status                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
}

// Run runs every check and folds them into the worst status.
func (a *HealthApp) Run(ctx context.Context) HealthReport {
	a.mu.RLock()
	deps := slices.Clone(a.deps)
	a.mu.RUnlock()

	targets := make(map[string]map[string]bool) // kind → its targets
	for _, d := range deps {
		if targets[d.kind] == nil {
			targets[d.kind] = make(map[string]bool)
		}
		targets[d.kind][d.target] = true
	}
	report := HealthReport{Status: StatusOK, Checks: make(map[string]CheckResult, len(deps))}
	for _, d := range deps {
		name := d.kind
		if len(targets[d.kind]) > 1 {
			name = d.kind + ":" + d.target
		}
		res := d.check(ctx)
		if prev, seen := report.Checks[name]; seen && prev.Status.rank() >= res.Status.rank() {
			res = prev
		}
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
