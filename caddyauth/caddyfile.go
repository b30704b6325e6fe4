package caddyauth

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("tenant_auth", parseCaddyfile)
	// Right after Caddy's own auth directives; tenant_ratelimit orders
	// itself right before request_header, so it always runs after this.
	httpcaddyfile.RegisterDirectiveOrder("tenant_auth", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(TenantAuth)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	tenant_auth [<matcher>] {
//	    keys        [<key:org_id:plan>[,<key:org_id:plan>…]]
//	    key         <key> <org_id> <plan>
//	    demo_keys   [<key:org_id:plan>[,<key:org_id:plan>…]]
//	    forward_key [true|false]
//	    database_url        [<url>]
//	    cache_ttl           <duration>
//	    negative_cache_ttl  <duration>
//	    refresh_interval    <duration>
//	    cache_size          <entries>
//	    negative_cache_size <entries>
//	}
//
// keys takes the VALID_API_KEYS format and may be empty; key is repeatable,
// every other setting may appear once. Keys written in the Caddyfile are
// stored as their SHA-256 (key_hash), never in clear; a key or a keys list
// given as a runtime placeholder ({env.VALID_API_KEYS}) is stored as the
// placeholder and expanded when the config is loaded, in the server's
// environment. demo_keys take effect only without a database and without
// other keys. database_url may be empty (static keys only) or a placeholder.
func (a *TenantAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("tenant_auth: unexpected argument %q; settings go in a block", d.Val())
	}
	seen := make(map[string]int) // subdirective → line it was first given on
	for d.NextBlock(0) {
		sub := d.Val()
		if first, ok := seen[sub]; ok && sub != "key" {
			return d.Errf("tenant_auth: %s given more than once (first on line %d); only key may repeat", sub, first)
		}
		seen[sub] = d.Line()
		switch sub {
		case "keys":
			hashed, later, err := splitKeyList(strings.Join(d.RemainingArgs(), ","))
			if err != nil {
				return d.Errf("tenant_auth: keys: %v (expected key:org_id:plan[,key:org_id:plan…])", err)
			}
			a.Keys = append(a.Keys, hashed...)
			a.KeyList = later
		case "key":
			args := d.RemainingArgs()
			if len(args) != 3 {
				return d.Errf("tenant_auth: key: expected <key> <org_id> <plan>, got %d arguments", len(args))
			}
			k := StaticKey{Key: args[0], OrgID: args[1], Plan: args[2]}
			if err := k.Validate(); err != nil {
				return d.Errf("tenant_auth: key: %v", err)
			}
			if !hasPlaceholder(k.Key) {
				k = hashedStaticKey(k)
			}
			a.Keys = append(a.Keys, k)
		case "demo_keys":
			hashed, later, err := splitKeyList(strings.Join(d.RemainingArgs(), ","))
			if err != nil {
				return d.Errf("tenant_auth: demo_keys: %v (expected key:org_id:plan[,key:org_id:plan…])", err)
			}
			if later != "" {
				return d.Errf("tenant_auth: demo_keys: placeholders are not supported here; declare such keys with keys")
			}
			a.DemoKeys = hashed
		case "forward_key":
			v, err := parseOptionalBool(d)
			if err != nil {
				return err
			}
			a.ForwardKey = v
		case "database_url":
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.Errf("tenant_auth: database_url: expected one URL, got %d arguments", len(args))
			}
			a.DatabaseURL = strings.Join(args, "")
		case "cache_ttl":
			if err := parseDuration(d, &a.CacheTTL); err != nil {
				return err
			}
		case "negative_cache_ttl":
			if err := parseDuration(d, &a.NegativeCacheTTL); err != nil {
				return err
			}
		case "refresh_interval":
			if err := parseDuration(d, &a.RefreshInterval); err != nil {
				return err
			}
		case "cache_size":
			if err := parseSize(d, &a.CacheSize); err != nil {
				return err
			}
		case "negative_cache_size":
			if err := parseSize(d, &a.NegativeCacheSize); err != nil {
				return err
			}
		default:
			return d.Errf("tenant_auth: unknown subdirective %q (expected one of: %s)", sub, strings.Join(subdirectives, ", "))
		}
	}
	return nil
}

// subdirectives lists what tenant_auth accepts, for error messages.
var subdirectives = []string{"keys", "key", "demo_keys", "forward_key", "database_url", "cache_ttl",
	"negative_cache_ttl", "refresh_interval", "cache_size", "negative_cache_size"}

// parseDuration reads "<name> <duration>"; the duration must be positive.
func parseDuration(d *caddyfile.Dispenser, into *caddy.Duration) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("tenant_auth: %s: expected one duration (e.g. 15m), got %d arguments", name, len(args))
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil || dur <= 0 {
		return d.Errf("tenant_auth: %s: expected a positive duration such as 30s or 15m, got %q", name, args[0])
	}
	*into = caddy.Duration(dur)
	return nil
}

// maxCacheSize bounds cache_size and negative_cache_size (memory).
const maxCacheSize = 10_000_000

// parseSize reads "<name> <entries>": a whole number from 1 to maxCacheSize.
func parseSize(d *caddyfile.Dispenser, into *int) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("tenant_auth: %s: expected one number of entries, got %d arguments", name, len(args))
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > maxCacheSize {
		return d.Errf("tenant_auth: %s: expected a number of entries from 1 to %d, got %q", name, maxCacheSize, args[0])
	}
	*into = n
	return nil
}

// parseOptionalBool reads "<name> [true|false]"; a bare name means true.
func parseOptionalBool(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
		return true, nil
	case 1:
		v, err := strconv.ParseBool(args[0])
		if err != nil {
			return false, d.Errf("tenant_auth: %s: expected true or false, got %q", name, args[0])
		}
		return v, nil
	default:
		return false, d.Errf("tenant_auth: %s: expected at most one argument (true or false)", name)
	}
}
