package tenant

import (
	"context"
	"errors"
	"time"
)

// LimitState is an organization's rate-limit state as the limiter holds it
// now: its effective limits and what is left of them. Reading it consumes
// nothing.
type LimitState struct {
	// Plan is the plan the limits come from.
	Plan string `json:"plan"`
	// PerMinute, PerDay and Burst are the effective limits (the plan's,
	// with the organization's overrides applied).
	PerMinute int64 `json:"per_minute"`
	PerDay    int64 `json:"per_day"`
	Burst     int64 `json:"burst"`
	// RemainingMinute is the whole tokens in the minute bucket (up to
	// PerMinute+Burst); RemainingDay what is left of today's quota.
	RemainingMinute int64 `json:"remaining_minute"`
	RemainingDay    int64 `json:"remaining_day"`
	// UsedToday is the requests admitted since 00:00 UTC.
	UsedToday int64 `json:"used_today"`
	// ResetMinute is when the bucket is full again; ResetDay the next
	// 00:00 UTC.
	ResetMinute time.Time `json:"reset_minute"`
	ResetDay    time.Time `json:"reset_day"`
	// Source is where the state was read: "redis" (shared by every
	// gateway on it), "local" (this process only) or "fallback" (this
	// process, while Redis fails).
	Source string `json:"source"`
}

// ErrNoPlanLimits means the limiter has no limits for the identity's plan.
var ErrNoPlanLimits = errors.New("no rate limits configured for the plan")

// LimitPeeker reads the limiter's live state, for the admin API and the
// tenants' usage report. tenant_ratelimit implements it.
type LimitPeeker interface {
	// PlanNames names the plans the limiter has limits for.
	PlanNames() []string
	// PeekLimits returns the state of id's organization under id's plan
	// and limit overrides. It fails with ErrNoPlanLimits when the plan is
	// unknown to the limiter, and with another error when the state cannot
	// be read (Redis down and no fallback).
	PeekLimits(ctx context.Context, id *Identity) (LimitState, error)
}

// RegisterLimiter adds a rate limiter of the config.
func (r *Registry) RegisterLimiter(l LimitPeeker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limiters = append(r.limiters, l)
}

// Limiter returns the limiter registered first, or nil when the config has
// none. Configs normally have one tenant_ratelimit (or several sharing one
// Redis, which hold the same state).
func (r *Registry) Limiter() LimitPeeker {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.limiters) == 0 {
		return nil
	}
	return r.limiters[0]
}
