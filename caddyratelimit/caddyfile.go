package caddyratelimit

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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

// subdirectives lists what tenant_ratelimit accepts, for error messages.
var subdirectives = []string{"redis_addr", "redis_password", "redis_db", "redis_timeout", "on_redis_error", "plan"}

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
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("tenant_ratelimit: unexpected argument %q; settings go in a block", d.Val())
	}
	firstLine := make(map[string]int)
	for d.NextBlock(0) {
		sub := d.Val()
		if first, seen := firstLine[sub]; seen && sub != "plan" {
			return d.Errf("tenant_ratelimit: %s given more than once (first on line %d); give each setting once", sub, first)
		}
		firstLine[sub] = d.Line()
		args := d.RemainingArgs()
		var err error
		switch sub {
		case "redis_addr":
			rl.RedisAddr = strings.TrimSpace(strings.Join(args, ","))
			if rl.RedisAddr != "" && !hasPlaceholder(rl.RedisAddr) {
				if _, err := (redisConfig{addr: rl.RedisAddr}).options(); err != nil {
					return d.Errf("tenant_ratelimit: %v", err) // names redis_addr itself
				}
			}
		case "redis_password":
			rl.RedisPassword, err = optionalArg(args, "<password>")
		case "redis_db":
			var db string
			db, err = parseDB(args)
			rl.RedisDB = caddyhttp.WeakString(db)
		case "redis_timeout":
			rl.RedisTimeout, err = parseTimeout(args)
		case "on_redis_error":
			if len(args) != 1 || (args[0] != onErrorLocal && args[0] != onErrorAllow && args[0] != onErrorDeny) {
				err = errorf("expected local, allow or deny, got %q", strings.Join(args, " "))
			} else {
				rl.OnRedisError = args[0]
			}
		case "plan":
			// parsePlan's errors name the plan themselves.
			p, perr := parsePlan(args)
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
			return d.Errf("tenant_ratelimit: unknown subdirective %q (expected one of: %s)", sub, strings.Join(subdirectives, ", "))
		}
		if err != nil {
			return d.Errf("tenant_ratelimit: %s: %v", sub, err)
		}
	}
	// Settings that only make sense together (a cluster has no redis_db).
	if err := rl.checkRedisSettings(); err != nil {
		return d.Errf("tenant_ratelimit: %v", err)
	}
	return nil
}

// errorf builds an argument error; UnmarshalCaddyfile adds the file, line
// and subdirective.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// optionalArg reads zero or one argument; zero (an unset env placeholder)
// and "" both mean unset.
func optionalArg(args []string, what string) (string, error) {
	switch len(args) {
	case 0:
		return "", nil
	case 1:
		return args[0], nil
	default:
		return "", errorf("expected at most one argument %s, got %d", what, len(args))
	}
}

// parseDB reads redis_db's argument: a database number, or a placeholder
// checked once expanded. "0" is the default, and so unset.
func parseDB(args []string) (string, error) {
	s, err := optionalArg(args, "<n>")
	if err != nil || s == "" || hasPlaceholder(s) {
		return s, err
	}
	n, perr := parseRedisDB(s)
	if perr != nil {
		return "", errorf("expected a database number (a non-negative integer), got %q", s)
	}
	if n == 0 {
		return "", nil
	}
	return strconv.Itoa(n), nil
}

func parseTimeout(args []string) (caddy.Duration, error) {
	if len(args) != 1 {
		return 0, errorf("expected one duration such as 100ms, got %d arguments", len(args))
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil {
		return 0, errorf("expected a duration such as 100ms, got %q", args[0])
	}
	if dur <= 0 {
		return 0, errorf("must be positive, got %s", args[0])
	}
	return caddy.Duration(dur), nil
}

// parsePlan reads "<name> <per_minute> <per_day> [burst <n>]". Its errors
// start with "plan" and, once known, the plan's name.
func parsePlan(args []string) (Plan, error) {
	const usage = "plan: expected <name> <per_minute> <per_day> [burst <n>]"
	if len(args) != 3 && len(args) != 5 {
		return Plan{}, errorf("%s, got %d arguments", usage, len(args))
	}
	p := Plan{Name: args[0]}
	var err error
	if p.PerMinute, err = parseCount("per_minute", args[1]); err != nil {
		return p, errorf("plan %s: %w", p.Name, err)
	}
	if p.PerDay, err = parseCount("per_day", args[2]); err != nil {
		return p, errorf("plan %s: %w", p.Name, err)
	}
	if len(args) == 5 {
		if args[3] != "burst" {
			return p, errorf("%s; got %q where burst was expected", usage, args[3])
		}
		if p.Burst, err = parseCount("burst", args[4]); err != nil {
			return p, errorf("plan %s: %w", p.Name, err)
		}
	}
	return p, p.validate()
}

// parseCount reads a whole number; Plan.validate checks its range.
func parseCount(what, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errorf("%s must be a whole number, got %q", what, s)
	}
	return n, nil
}
