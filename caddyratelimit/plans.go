package caddyratelimit

import (
	"fmt"
	"strconv"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Plan is a named set of limits. Organizations get their plan's limits
// unless the key store overrides them per organization.
type Plan struct {
	// Name is the plan tier as tenant_auth reports it (the key's or the
	// organization's plan): 1-64 characters of letters, digits, "." "_" "-".
	Name string `json:"name"`

	// PerMinute is the sustained rate: the bucket refills continuously at
	// this many tokens per 60 seconds. Must be positive.
	PerMinute int64 `json:"per_minute"`

	// PerDay is the daily quota, per UTC calendar day (reset at 00:00 UTC).
	// Must be positive.
	PerDay int64 `json:"per_day"`

	// Burst is extra bucket capacity on top of PerMinute, so an idle
	// organization can send PerMinute+Burst requests at once. Default 0.
	Burst int64 `json:"burst,omitempty"`
}

// Limits returns the plan's limits.
func (p Plan) Limits() Limits {
	return Limits{PerMinute: p.PerMinute, PerDay: p.PerDay, Burst: p.Burst}
}

// Validate checks the plan's name and limits.
func (p Plan) Validate() error {
	if len(p.Name) > 64 || !tenant.ValidRequestID(p.Name) {
		return fmt.Errorf("plan name %q: want 1-64 characters of letters, digits, '.', '_', '-'", p.Name)
	}
	if err := p.Limits().Validate(); err != nil {
		return fmt.Errorf("plan %s: %w", p.Name, err)
	}
	return nil
}

// DefaultPlans are the plans used when the config declares none (DESIGN §2).
func DefaultPlans() []Plan {
	return []Plan{
		{Name: "basic", PerMinute: 100, PerDay: 10_000, Burst: 50},
		{Name: "premium", PerMinute: 1_000, PerDay: 100_000, Burst: 500},
		{Name: "enterprise", PerMinute: 10_000, PerDay: 1_000_000, Burst: 5_000},
	}
}

// Policy is the limits one request is decided with, plus everything about
// them that does not change per request, built once: the static header
// values and the Redis script's arguments.
type Policy struct {
	// Plan is the plan the limits come from.
	Plan string
	// Limits are the effective limits.
	Limits Limits

	limitMinute string // X-RateLimit-Limit-Minute
	limitDay    string // X-RateLimit-Limit-Day
	burst       string // X-RateLimit-Burst
	policy      string // RateLimit-Policy
	scriptArgs  []any  // ARGV of limiter.lua
	counters    *planCounters
}

// NewPolicy builds the policy for limits of a plan.
func NewPolicy(plan string, l Limits) *Policy {
	capacity := strconv.FormatInt(l.Capacity(), 10)
	perMinute := strconv.FormatInt(l.PerMinute, 10)
	perDay := strconv.FormatInt(l.PerDay, 10)
	return &Policy{
		Plan:        plan,
		Limits:      l,
		limitMinute: perMinute,
		limitDay:    perDay,
		burst:       strconv.FormatInt(l.Burst, 10),
		// draft-ietf-httpapi-ratelimit-headers-10 §3: a List of quota
		// policies; q is what a full bucket (or a fresh day) admits.
		policy:     `"minute";q=` + capacity + `;w=60, "day";q=` + perDay + `;w=86400`,
		scriptArgs: []any{perMinute, capacity, perDay},
	}
}

// withOverrides returns the limits with the organization's overrides from
// the key store applied: a zero PerMinute or PerDay keeps the plan's, and
// Burst applies only when set.
func withOverrides(l Limits, o tenant.LimitOverrides) Limits {
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
