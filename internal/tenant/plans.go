package tenant

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// BuiltinPlan is a plan tier every gateway knows without configuration:
// tenant_ratelimit applies these limits when its config declares no plan,
// and the CLI accepts these names without TENANT_PLANS.
type BuiltinPlan struct {
	Name      string
	PerMinute int64 // tokens per 60 s, the bucket's refill rate
	PerDay    int64 // requests per UTC calendar day
	Burst     int64 // bucket capacity on top of PerMinute
}

// builtinPlans is the one list of built-in plans.
var builtinPlans = [...]BuiltinPlan{
	{Name: "basic", PerMinute: 100, PerDay: 10_000, Burst: 50},
	{Name: "premium", PerMinute: 1_000, PerDay: 100_000, Burst: 500},
	{Name: "enterprise", PerMinute: 10_000, PerDay: 1_000_000, Burst: 5_000},
}

// BuiltinPlans returns the built-in plans (a copy).
func BuiltinPlans() []BuiltinPlan { return slices.Clone(builtinPlans[:]) }

// BuiltinPlanNames returns the built-in plans' names.
func BuiltinPlanNames() []string {
	names := make([]string, len(builtinPlans))
	for i, p := range builtinPlans {
		names[i] = p.Name
	}
	return names
}

// PlansEnv names the environment variable that lists extra plans,
// comma-separated: plans declared with `plan` lines in tenant_ratelimit,
// which the CLI then accepts for organizations and keys. A gateway whose
// environment sets it refuses a config whose tenant_ratelimit does not
// define every plan it lists.
const PlansEnv = "TENANT_PLANS"

// ValidPlanName reports whether s can name a plan: 1-64 characters of
// letters, digits, '.', '_' and '-' (safe in headers, logs and JSON).
func ValidPlanName(s string) bool { return len(s) <= 64 && ValidRequestID(s) }

// ParsePlanNames reads a comma-separated list of plan names, as in
// TENANT_PLANS. Blank entries are ignored; an invalid name is an error.
func ParsePlanNames(list string) ([]string, error) {
	var names []string
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !ValidPlanName(p) {
			return nil, fmt.Errorf("plan %q: want 1-64 characters of letters, digits, '.', '_', '-'", p)
		}
		if !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	return names, nil
}

func init() {
	caddy.RegisterModule(new(PlansApp))
}

// PlansAppID is the module ID of the plan registry.
const PlansAppID = "tenantgate_plans"

// PlansApp is the per-config registry that checks, at provision time (so
// `caddy validate` sees it), that every plan a module hands out is a plan
// the rate limiter defines, instead of failing requests at run time.
//
// tenant_auth calls RequirePlans once, with the plans of its static keys.
// tenant_ratelimit calls Required and refuses the config when one of them
// is not among its plans. Caddy provisions a route's handlers in order, and
// the Caddyfile puts tenant_auth before tenant_ratelimit, so each limiter
// sees the requirement of the tenant_auth in front of it: each call of
// RequirePlans replaces the previous one, so two sites with their own
// tenant_auth and tenant_ratelimit are checked separately.
//
// Like HealthApp it is a Caddy app, so each config load gets a fresh
// registry; it needs no configuration.
type PlansApp struct {
	mu     sync.Mutex
	source string
	plans  []string
}

// CaddyModule returns the Caddy module information.
func (*PlansApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  PlansAppID,
		New: func() caddy.Module { return new(PlansApp) },
	}
}

// Start implements caddy.App.
func (*PlansApp) Start() error { return nil }

// Stop implements caddy.App.
func (*PlansApp) Stop() error { return nil }

// RequirePlans records that source (for error messages, e.g. "a static
// key of tenant_auth") hands out plans, for the limiters provisioned after
// it. It replaces the previous call's plans; duplicates are dropped.
func (a *PlansApp) RequirePlans(source string, plans ...string) {
	var distinct []string
	for _, p := range plans {
		if !slices.Contains(distinct, p) {
			distinct = append(distinct, p)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.source, a.plans = source, distinct
}

// Required returns the plans of the latest RequirePlans call and its source.
func (a *PlansApp) Required() (source string, plans []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.source, slices.Clone(a.plans)
}

// RequirePlans is PlansApp.RequirePlans on the config's registry.
func RequirePlans(ctx caddy.Context, source string, plans ...string) error {
	app, err := PlansFromContext(ctx)
	if err != nil {
		return err
	}
	app.RequirePlans(source, plans...)
	return nil
}

// PlansFromContext returns the config's plan registry.
func PlansFromContext(ctx caddy.Context) (*PlansApp, error) {
	app, err := ctx.App(PlansAppID)
	if err != nil {
		return nil, err
	}
	return app.(*PlansApp), nil
}

// PlansOf returns the plans of identities, each once, for RequirePlans.
func PlansOf[K comparable, M ~map[K]*Identity](ids M) []string {
	var plans []string
	for _, id := range ids {
		if !slices.Contains(plans, id.Plan) {
			plans = append(plans, id.Plan)
		}
	}
	slices.Sort(plans)
	return plans
}

// Interface guard
var _ caddy.App = (*PlansApp)(nil)
