package caddyratelimit

import (
	"sync"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

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
	plans  map[string]*Policy
	logger *zap.Logger
	m      *metrics

	mu         sync.RWMutex
	overridden map[overrideKey]*Policy
}

func newPolicies(plans []Plan, m *metrics, logger *zap.Logger) *policies {
	ps := &policies{
		plans:      make(map[string]*Policy, len(plans)),
		logger:     logger,
		m:          m,
		overridden: make(map[overrideKey]*Policy),
	}
	for _, p := range plans {
		ps.plans[p.Name] = ps.build(p.Name, p.Limits())
	}
	return ps
}

func (ps *policies) build(plan string, l Limits) *Policy {
	p := NewPolicy(plan, l)
	p.counters = ps.m.forPlan(plan)
	return p
}

// lookup returns the identity's policy, or nil when its plan is unknown.
// Overrides that make no valid limits (say a negative value in the
// database) are logged once and ignored, so a bad row neither locks the
// organization out nor lifts its limits.
func (ps *policies) lookup(id *tenant.Identity) *Policy {
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
	if err := l.Validate(); err != nil {
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
