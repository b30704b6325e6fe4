package tenant

import (
	"fmt"
	"slices"
	"strings"
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

// requiredPlans is the latest RequirePlans call: who hands out which plans.
type requiredPlans struct {
	source string
	plans  []string
}

// RequirePlans records that source (for error messages, e.g. "a static
// key of tenant_auth") hands out plans, for the limiters provisioned after
// it, so that a plan without limits fails at provision time (`caddy
// validate` sees it) instead of failing requests at run time.
//
// tenant_auth calls it once, with the plans of its static keys;
// tenant_ratelimit reads RequiredPlans and refuses the config when one of
// them is not among its plans. Caddy provisions a route's handlers in
// order, and the Caddyfile puts tenant_auth before tenant_ratelimit, so
// each limiter sees the requirement of the tenant_auth in front of it:
// each call replaces the previous one, so two sites with their own
// tenant_auth and tenant_ratelimit are checked separately. Duplicates are
// dropped.
func (r *Registry) RequirePlans(source string, plans ...string) {
	var distinct []string
	for _, p := range plans {
		if !slices.Contains(distinct, p) {
			distinct = append(distinct, p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.required = requiredPlans{source: source, plans: distinct}
}

// RequiredPlans returns the plans of the latest RequirePlans call and its
// source.
func (r *Registry) RequiredPlans() (source string, plans []string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.required.source, slices.Clone(r.required.plans)
}

// PlansOf returns the plans of identities, each once and sorted, for
// RequirePlans.
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
