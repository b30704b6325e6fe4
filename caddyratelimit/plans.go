package caddyratelimit

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Plan is a named set of limits. Organizations get their plan's limits
// unless the key store overrides them per organization.
type Plan struct {
	// Name is the plan tier as tenant_auth reports it (the key's or the
	// organization's plan): 1-64 characters of letters, digits, "." "_" "-".
	// Default: none (required).
	Name string `json:"name"`

	// PerMinute is the sustained rate: the bucket refills continuously at
	// this many tokens per 60 seconds. A positive whole number; per_minute
	// plus burst is at most 100000000. Default: none (required).
	PerMinute int64 `json:"per_minute"`

	// PerDay is the daily quota, per UTC calendar day (reset at 00:00 UTC):
	// a positive whole number, at most 1000000000000. Default: none
	// (required).
	PerDay int64 `json:"per_day"`

	// Burst is extra bucket capacity on top of per_minute, so an idle
	// organization can send per_minute+burst requests at once. Default: 0.
	Burst int64 `json:"burst,omitempty"`
}

// limits returns the plan's limits.
func (p Plan) limits() limits {
	return limits{PerMinute: p.PerMinute, PerDay: p.PerDay, Burst: p.Burst}
}

// validate checks the plan's name and limits.
func (p Plan) validate() error {
	if !tenant.ValidPlanName(p.Name) {
		return fmt.Errorf("plan name %q: want 1-64 characters of letters, digits, '.', '_', '-'", p.Name)
	}
	if err := p.limits().validate(); err != nil {
		return fmt.Errorf("plan %s: %w", p.Name, err)
	}
	return nil
}

// defaultPlans are the plans used when the config declares none: the
// built-in plans, which the CLI accepts too.
func defaultPlans() []Plan {
	builtin := tenant.BuiltinPlans()
	plans := make([]Plan, len(builtin))
	for i, b := range builtin {
		plans[i] = Plan(b)
	}
	return plans
}

// checkRequiredPlans refuses a config in which a plan handed out elsewhere
// has no limits: a plan of the static keys of the tenant_auth in front of
// this handler, or a plan listed in TENANT_PLANS in the server's
// environment (the CLI accepts those for organizations and keys). Without
// this check such requests would fail with 500 at run time.
func checkRequiredPlans(registry *tenant.Registry, plans []Plan) error {
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.Name
	}
	missing := func(plan, source, fix string) error {
		return fmt.Errorf("plan %q of %s has no limits in this tenant_ratelimit (its plans: %s): add a line \"plan %s <per_minute> <per_day> [burst <n>]\" to tenant_ratelimit, or %s",
			plan, source, strings.Join(names, ", "), plan, fix)
	}
	source, required := registry.RequiredPlans()
	for _, plan := range required {
		if !slices.Contains(names, plan) {
			return missing(plan, source, "give the key one of its plans")
		}
	}
	listed, err := tenant.ParsePlanNames(os.Getenv(tenant.PlansEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", tenant.PlansEnv, err)
	}
	for _, plan := range listed {
		if !slices.Contains(names, plan) {
			return missing(plan, "the environment variable "+tenant.PlansEnv, "remove it from "+tenant.PlansEnv)
		}
	}
	return nil
}

// Bounds on configured limits. maxCapacity keeps capacity·60·10^6 below
// 2^53 for the Lua script; maxPerDay is far above any real quota.
const (
	maxCapacity = 100_000_000
	maxPerDay   = 1_000_000_000_000
)

// limits are the effective limits of one organization: its plan's, with
// the organization's overrides from the key store applied.
type limits struct {
	// PerMinute is the bucket's refill rate: tokens per 60 s.
	PerMinute int64
	// PerDay is the number of requests admitted per UTC calendar day.
	PerDay int64
	// Burst is added to PerMinute to give the bucket's capacity.
	Burst int64
}

// capacity is the most tokens the minute bucket holds.
func (l limits) capacity() int64 { return l.PerMinute + l.Burst }

// validate checks that the limits are usable: positive rates, a
// non-negative burst, and values within the bounds the Lua script handles.
func (l limits) validate() error {
	switch {
	case l.PerMinute <= 0:
		return fmt.Errorf("per_minute must be a positive integer, got %d", l.PerMinute)
	case l.PerDay <= 0:
		return fmt.Errorf("per_day must be a positive integer, got %d", l.PerDay)
	case l.Burst < 0:
		return fmt.Errorf("burst must be zero or a positive integer, got %d", l.Burst)
	case l.PerMinute > maxCapacity || l.Burst > maxCapacity || l.capacity() > maxCapacity:
		return fmt.Errorf("per_minute + burst must be at most %d, got %d + %d", maxCapacity, l.PerMinute, l.Burst)
	case l.PerDay > maxPerDay:
		return fmt.Errorf("per_day must be at most %d, got %d", int64(maxPerDay), l.PerDay)
	}
	return nil
}

// withOverrides returns the limits with the organization's overrides from
// the key store applied: a zero PerMinute or PerDay keeps the plan's, and
// Burst applies only when set.
func withOverrides(l limits, o tenant.LimitOverrides) limits {
	if o.PerMinute != 0 {
		l.PerMinute = o.PerMinute
	}
	if o.PerDay != 0 {
		l.PerDay = o.PerDay
	}
	if o.BurstSet {
		l.Burst = o.Burst
	}
	return l
}

// policy is the limits one request is decided with, plus everything about
// them that does not change per request, built once: the static header
// values and the Redis script's arguments.
type policy struct {
	// Plan is the plan the limits come from.
	Plan string
	// Limits are the effective limits.
	Limits limits

	limitMinute string // X-RateLimit-Limit-Minute
	limitDay    string // X-RateLimit-Limit-Day
	burst       string // X-RateLimit-Burst
	policy      string // RateLimit-Policy
	scriptArgs  []any  // ARGV of limiter.lua
	counters    *planCounters
}

// newPolicy builds the policy for limits of a plan.
func newPolicy(plan string, l limits) *policy {
	capacity := strconv.FormatInt(l.capacity(), 10)
	perMinute := strconv.FormatInt(l.PerMinute, 10)
	perDay := strconv.FormatInt(l.PerDay, 10)
	return &policy{
		Plan:        plan,
		Limits:      l,
		limitMinute: perMinute,
		limitDay:    perDay,
		burst:       strconv.FormatInt(l.Burst, 10),
		// draft-ietf-httpapi-ratelimit-headers-10, section 3: a List of quota
		// policies; q is what a full bucket (or a fresh day) admits.
		policy:     `"minute";q=` + capacity + `;w=60, "day";q=` + perDay + `;w=86400`,
		scriptArgs: []any{perMinute, capacity, perDay},
	}
}

// maxOverridePolicies bounds the cache of policies built for organizations
// whose limits are overridden in the key store. Past it, such policies are
// built per request (correct, only slower).
const maxOverridePolicies = 10_000

// overrideKey identifies the effective limits of an overridden organization.
type overrideKey struct {
	plan string
	o    tenant.LimitOverrides
}

// policies resolves a request's identity to the policy it is decided with.
type policies struct {
	plans  map[string]*policy
	logger *zap.Logger
	m      *metrics

	mu         sync.RWMutex
	overridden map[overrideKey]*policy
}

func newPolicies(plans []Plan, m *metrics, logger *zap.Logger) *policies {
	ps := &policies{
		plans:      make(map[string]*policy, len(plans)),
		logger:     logger,
		m:          m,
		overridden: make(map[overrideKey]*policy),
	}
	for _, p := range plans {
		ps.plans[p.Name] = ps.build(p.Name, p.limits())
	}
	return ps
}

func (ps *policies) build(plan string, l limits) *policy {
	p := newPolicy(plan, l)
	p.counters = ps.m.forPlan(plan)
	return p
}

// lookup returns the identity's policy, or nil when its plan is unknown.
// Overrides that make no valid limits (say a negative value in the
// database) are logged once and ignored, so a bad row neither locks the
// organization out nor lifts its limits.
func (ps *policies) lookup(id *tenant.Identity) *policy {
	base := ps.plans[id.Plan]
	if base == nil || id.Limits.IsZero() {
		return base
	}
	key := overrideKey{plan: id.Plan, o: id.Limits}
	ps.mu.RLock()
	p := ps.overridden[key]
	ps.mu.RUnlock()
	if p != nil {
		return p
	}
	l := withOverrides(base.Limits, id.Limits)
	if err := l.validate(); err != nil {
		ps.logger.Error("ignoring invalid per-organization rate limits; using the plan's",
			zap.String("organization_id", id.OrgID), zap.String("plan", id.Plan), zap.Error(err))
		p = base
	} else {
		p = ps.build(id.Plan, l)
	}
	ps.mu.Lock()
	if len(ps.overridden) < maxOverridePolicies {
		ps.overridden[key] = p
	}
	ps.mu.Unlock()
	return p
}
