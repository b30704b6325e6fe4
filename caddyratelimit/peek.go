package caddyratelimit

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Reading the live state for the admin API and the tenants' usage report
// (tenant.LimitPeeker). Nothing here is on the request path, and nothing
// here consumes a token.

//go:embed peek.lua
var peekLua string

var peekScript = redis.NewScript(peekLua)

// PlanNames implements tenant.LimitPeeker: the plans this handler has limits
// for, sorted.
func (rl *RateLimit) PlanNames() []string {
	names := make([]string, 0, len(rl.policies.plans))
	for name := range rl.policies.plans {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// PeekLimits implements tenant.LimitPeeker: the organization's state where
// its requests are decided now (Redis, or in process without Redis or
// while on_redis_error local serves for a failing Redis).
func (rl *RateLimit) PeekLimits(ctx context.Context, id *tenant.Identity) (tenant.LimitState, error) {
	p := rl.policies.lookup(id)
	if p == nil {
		return tenant.LimitState{}, fmt.Errorf("%w %q", tenant.ErrNoPlanLimits, id.Plan)
	}
	if rl.shared == nil {
		return limitState(p, rl.local.peek(id.OrgID, p.Limits, time.Now().UnixMicro())), nil
	}
	cctx, cancel := context.WithTimeout(ctx, rl.timeout)
	d, err := rl.shared.limiter.peek(cctx, id.OrgID, p.Limits)
	cancel()
	if err == nil {
		return limitState(p, d), nil
	}
	if rl.OnRedisError == "" || rl.OnRedisError == onErrorLocal {
		// The fallback that decides while this Redis fails, which
		// continues from the state Redis last reported.
		d = rl.shared.fallback.peek(id.OrgID, p.Limits, time.Now().UnixMicro())
		d.Source = sourceFallback
		return limitState(p, d), nil
	}
	return tenant.LimitState{}, fmt.Errorf("reading the rate-limit state from Redis: %w", err)
}

// limitState renders a decision-shaped snapshot for the tenant package.
func limitState(p *policy, d decision) tenant.LimitState {
	l := p.Limits
	micros := func(us int64) time.Time { return time.UnixMicro(us).UTC() }
	return tenant.LimitState{
		Plan:            p.Plan,
		PerMinute:       l.PerMinute,
		PerDay:          l.PerDay,
		Burst:           l.Burst,
		RemainingMinute: d.remainingMinute(),
		RemainingDay:    d.remainingDay(l),
		UsedToday:       d.DayUsed,
		ResetMinute:     micros(d.fullAt(l)),
		ResetDay:        micros(d.dayResetAt()),
		Source:          d.Source.String(),
	}
}

// peek returns the organization's state at now without changing it: a
// fresh organization has a full bucket and nothing used today.
func (l *localLimiter) peek(orgID string, lim limits, now int64) decision {
	d := decision{Source: sourceLocal, Tokens: lim.capacity() * microTokens, Now: now}
	sh := l.orgs.shardOf(orgID)
	sh.mu.Lock()
	if e := sh.m[orgID]; e != nil {
		d.Tokens = refilled(e.st.tokens, e.st.ts, now, lim)
		d.DayUsed = e.st.usedToday(now)
	}
	sh.mu.Unlock()
	return d
}

// peek reads the organization's state from Redis (peek.lua: one round
// trip, on Redis's clock) and refills the bucket to now as limiter.lua
// would.
func (r *redisLimiter) peek(ctx context.Context, orgID string, lim limits) (decision, error) {
	keys := r.keys(orgID)
	res, err := peekScript.Run(ctx, r.client, keys[:]).Slice()
	if err != nil {
		return decision{}, fmt.Errorf("rate-limit peek script: %w", err)
	}
	if len(res) != 3 {
		return decision{}, fmt.Errorf("rate-limit peek script: got %d values, want 3", len(res))
	}
	bucket, _ := res[0].(string)
	counter, _ := res[1].(string)
	now, ok := res[2].(int64)
	if !ok {
		return decision{}, fmt.Errorf("rate-limit peek script: time is %T", res[2])
	}
	d := decision{Source: sourceRedis, Tokens: lim.capacity() * microTokens, Now: now}
	if held, ts, ok := parsePair(bucket); ok {
		d.Tokens = refilled(min(held, d.Tokens), ts, now, lim)
	}
	if day, used, ok := parsePair(counter); ok && day == now/usPerDay {
		d.DayUsed = used
	}
	return d, nil
}

// parsePair reads "<int> <int>", the form of both keys' values.
func parsePair(s string) (a, b int64, ok bool) {
	x, y, found := strings.Cut(s, " ")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(x, 10, 64)
	b, err2 := strconv.ParseInt(y, 10, 64)
	return a, b, err1 == nil && err2 == nil
}
