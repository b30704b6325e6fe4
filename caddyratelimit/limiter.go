package caddyratelimit

import "context"

// Limiter decides whether one request of an organization may pass under a
// policy, taking one token and one daily unit when it does. Implementations:
// RedisLimiter (shared by every gateway on one Redis), LocalLimiter (in
// process) and the failure-policy wrapper the handler builds around them.
type Limiter interface {
	Allow(ctx context.Context, orgID string, p *Policy) (Decision, error)
}

// Interface guards
var (
	_ Limiter = (*RedisLimiter)(nil)
	_ Limiter = (*LocalLimiter)(nil)
	_ Limiter = (*failoverLimiter)(nil)
)
