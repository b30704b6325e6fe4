package caddyauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// builtinPlans are the plans tenant_ratelimit knows without configuration.
var builtinPlans = tenant.BuiltinPlanNames()

// PlansEnv names extra plans (declared with `plan` lines in the Caddyfile's
// tenant_ratelimit) that the CLI accepts, comma-separated.
const PlansEnv = tenant.PlansEnv

// planSet is the plans the CLI accepts: the built-ins plus extras.
type planSet []string

// newPlanSet adds the comma-separated extra plans to the built-ins.
func newPlanSet(extra string) (planSet, error) {
	plans := slices.Clone(builtinPlans)
	for _, p := range strings.Split(extra, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !validName(p, 64) {
			return nil, fmt.Errorf("allowed plan %q: want 1-64 characters of letters, digits, '.', '_', '-'", p)
		}
		if !slices.Contains(plans, p) {
			plans = append(plans, p)
		}
	}
	return plans, nil
}

// check refuses a plan that is not in the set.
func (s planSet) check(plan string) error {
	if slices.Contains(s, plan) {
		return nil
	}
	shown := plan
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return fmt.Errorf("unknown plan %q (known: %s; allow custom plans with --allowed-plans or %s)",
		shown, strings.Join(s, ", "), PlansEnv)
}
