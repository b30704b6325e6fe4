package tenant

import (
	"context"
	"slices"
)

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

// dependency is one registered check of one dependency.
type dependency struct {
	kind, target string
	check        Check
}

// RegisterDependency adds the check of a dependency of some kind
// ("postgres", "redis") at target (such as "db.internal:5432/keys" or
// "127.0.0.1:6379"; never a password). /health/ready names a check after
// its kind when the config uses one target of that kind, and
// "kind:target" when it uses several, so two databases are two checks.
// Checks registered for the same kind and target (two handlers sharing a
// database) are one check: the worse of their results.
func (r *Registry) RegisterDependency(kind, target string, check Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deps = append(r.deps, dependency{kind: kind, target: target, check: check})
}

// RegisterCheck adds a check named name (a dependency with no target).
// Checks registered under one name are one check: the worse of their
// results.
func (r *Registry) RegisterCheck(name string, check Check) {
	r.RegisterDependency(name, "", check)
}

// HealthReport is the result of running every registered check.
type HealthReport struct {
	Status Status                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
}

// CheckHealth runs every check and folds them into the worst status.
func (r *Registry) CheckHealth(ctx context.Context) HealthReport {
	r.mu.RLock()
	deps := slices.Clone(r.deps)
	r.mu.RUnlock()

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
