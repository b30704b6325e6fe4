package caddyratelimit

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("tenant_ratelimit", parseCaddyfile)
	// tenant_auth orders itself right after forward_auth, which comes before
	// request_header: so the identity is always known here, and the limit is
	// applied before any proxying or response.
	httpcaddyfile.RegisterDirectiveOrder("tenant_ratelimit", httpcaddyfile.Before, "request_header")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	rl := new(RateLimit)
	err := rl.UnmarshalCaddyfile(h.Dispenser)
	return rl, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	tenant_ratelimit [<matcher>] {
//	    redis_addr     [<host:port>[,<host:port>…] | <redis:// or rediss:// URL>]
//	    redis_password [<password>]
//	    redis_db       [<n>]
//	    redis_timeout  <duration>
//	    on_redis_error local|allow|deny
//	    plan <name> <per_minute> <per_day> [burst <n>]
//	}
//
// An empty redis_addr (say from an unset {$REDIS_ADDR}) means in process.
// redis_addr, redis_password and redis_db may hold runtime placeholders
// such as {env.REDIS_ADDR}: kept as written in the JSON config, expanded
// and checked when the config is loaded. Each setting may be given once;
// plan is repeatable, once per name. When no plan is given, the built-in
// plans apply.
func (rl *RateLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const directive = "tenant_ratelimit"
	d.Next() // directive name
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return err
	}
	once := caddyfileutil.NewOnce(directive, "plan")
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "redis_addr":
			rl.RedisAddr = strings.TrimSpace(strings.Join(d.RemainingArgs(), ","))
			if rl.RedisAddr != "" && !caddyfileutil.HasPlaceholder(rl.RedisAddr) {
				if _, err := (redisConfig{addr: rl.RedisAddr}).options(); err != nil {
					return d.Errf("tenant_ratelimit: %v", err) // names redis_addr itself
				}
			}
		case "redis_password":
			rl.RedisPassword, err = caddyfileutil.OptionalValue(d, directive, "password")
		case "redis_db":
			var db string
			if db, err = caddyfileutil.OptionalValue(d, directive, "database number"); err != nil {
				return err
			}
			if db, err = canonicalDB(db); err != nil {
				return d.Errf("tenant_ratelimit: redis_db: %v", err)
			}
			rl.RedisDB = caddyhttp.WeakString(db)
		case "redis_timeout":
			rl.RedisTimeout, err = caddyfileutil.Duration(d, directive, "100ms")
		case "on_redis_error":
			args := d.RemainingArgs()
			if len(args) != 1 || (args[0] != onErrorLocal && args[0] != onErrorAllow && args[0] != onErrorDeny) {
				return d.Errf("tenant_ratelimit: on_redis_error: expected local, allow or deny, got %q", strings.Join(args, " "))
			}
			rl.OnRedisError = args[0]
		case "plan":
			// parsePlan's errors name the plan themselves.
			p, perr := parsePlan(d.RemainingArgs())
			if perr != nil {
				return d.Errf("tenant_ratelimit: %v", perr)
			}
			for _, other := range rl.Plans {
				if other.Name == p.Name {
					return d.Errf("tenant_ratelimit: plan %s declared more than once", p.Name)
				}
			}
			rl.Plans = append(rl.Plans, p)
		default:
			return caddyfileutil.Unknown(d, directive, "redis_addr", "redis_password", "redis_db", "redis_timeout", "on_redis_error", "plan")
		}
		if err != nil {
			return err
		}
	}
	// Settings that only make sense together (a cluster has no redis_db).
	if err := rl.checkRedisSettings(); err != nil {
		return d.Errf("tenant_ratelimit: %v", err)
	}
	return nil
}

// canonicalDB reads redis_db's value: a database number, or a placeholder
// checked once expanded. "0" is the default, and so unset.
func canonicalDB(s string) (string, error) {
	if s == "" || caddyfileutil.HasPlaceholder(s) {
		return s, nil
	}
	n, err := parseRedisDB(s)
	if err != nil {
		return "", fmt.Errorf("expected a database number (a non-negative integer), got %q", s)
	}
	if n == 0 {
		return "", nil
	}
	return strconv.Itoa(n), nil
}

// parsePlan reads "<name> <per_minute> <per_day> [burst <n>]". Its errors
// start with "plan" and, once known, the plan's name.
func parsePlan(args []string) (Plan, error) {
	const usage = "plan: expected <name> <per_minute> <per_day> [burst <n>]"
	if len(args) != 3 && len(args) != 5 {
		return Plan{}, fmt.Errorf("%s, got %d arguments", usage, len(args))
	}
	p := Plan{Name: args[0]}
	var err error
	if p.PerMinute, err = parseCount("per_minute", args[1]); err != nil {
		return p, fmt.Errorf("plan %s: %w", p.Name, err)
	}
	if p.PerDay, err = parseCount("per_day", args[2]); err != nil {
		return p, fmt.Errorf("plan %s: %w", p.Name, err)
	}
	if len(args) == 5 {
		if args[3] != "burst" {
			return p, fmt.Errorf("%s; got %q where burst was expected", usage, args[3])
		}
		if p.Burst, err = parseCount("burst", args[4]); err != nil {
			return p, fmt.Errorf("plan %s: %w", p.Name, err)
		}
	}
	return p, p.validate()
}

// parseCount reads a whole number; Plan.validate checks its range.
func parseCount(what, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be a whole number, got %q", what, s)
	}
	return n, nil
}
