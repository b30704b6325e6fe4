package caddyratelimit

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Interface guards
var (
	_ caddy.Provisioner           = (*RateLimit)(nil)
	_ caddy.Validator             = (*RateLimit)(nil)
	_ caddy.CleanerUpper          = (*RateLimit)(nil)
	_ caddyhttp.MiddlewareHandler = (*RateLimit)(nil)
	_ caddyfile.Unmarshaler       = (*RateLimit)(nil)
	_ tenant.LimitPeeker          = (*RateLimit)(nil)
	_ caddy.Destructor            = (*sharedRedis)(nil)
	_ caddy.Destructor            = (*LocalLimiter)(nil)
	_ caddy.Destructor            = (*metrics)(nil)
)
