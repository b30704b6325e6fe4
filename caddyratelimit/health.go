package caddyratelimit

import (
	"context"
	"time"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// redisHealth is the "redis" check of /health/ready. It pings Redis
// (bounded by redis_timeout), feeds the answer to the breaker, and reports
// ok; degraded while a fallback serves (on_redis_error local or allow); or
// down under on_redis_error deny, when requests cannot be served.
func (rl *RateLimit) redisHealth(onError string) tenant.Check {
	return func(ctx context.Context) tenant.CheckResult {
		b := rl.shared.breaker
		// A probe slot keeps a failing Redis from being pinged by every
		// health request as well as by the request path.
		if call, probe := b.acquire(); call {
			cctx, cancel := context.WithTimeout(ctx, rl.timeout)
			err := rl.shared.client.Ping(cctx)
			cancel()
			switch {
			case err == nil:
				b.succeeded(probe)
			case ctx.Err() == nil:
				rl.metrics.redisErrors.Inc()
				b.failed(err, probe, onError)
			case probe:
				b.probing.Store(false)
			}
		}
		failing, since, lastErr := b.state()
		if !failing {
			return tenant.CheckResult{Status: tenant.StatusOK}
		}
		detail := "Redis failing since " + since.UTC().Format(time.RFC3339) + " (" + lastErr + "); "
		switch onError {
		case OnErrorDeny:
			return tenant.CheckResult{Status: tenant.StatusDown, Detail: detail + "rate-limited requests are answered 503 (on_redis_error deny)"}
		case OnErrorAllow:
			return tenant.CheckResult{Status: tenant.StatusDegraded, Detail: detail + "requests are admitted without limits (on_redis_error allow)"}
		default:
			return tenant.CheckResult{Status: tenant.StatusDegraded, Detail: detail + "limits are enforced per instance, in process (on_redis_error local)"}
		}
	}
}
