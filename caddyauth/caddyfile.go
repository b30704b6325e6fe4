package caddyauth

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
	"github.com/tenantgate/tenantgate/keystore"
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
	const directive = "tenant_auth"
	d.Next() // directive name
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return err
	}
	once := caddyfileutil.NewOnce(directive, "key")
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "keys":
			hashed, later, lerr := splitKeyList(strings.Join(d.RemainingArgs(), ","))
			if lerr != nil {
				return d.Errf("tenant_auth: keys: %v (expected key:org_id:plan[,key:org_id:plan…])", lerr)
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
			if !caddyfileutil.HasPlaceholder(k.Key) {
				k = hashedStaticKey(k)
			}
			a.Keys = append(a.Keys, k)
		case "demo_keys":
			hashed, later, lerr := splitKeyList(strings.Join(d.RemainingArgs(), ","))
			if lerr != nil {
				return d.Errf("tenant_auth: demo_keys: %v (expected key:org_id:plan[,key:org_id:plan…])", lerr)
			}
			if later != "" {
				return d.Errf("tenant_auth: demo_keys: placeholders are not supported here; declare such keys with keys")
			}
			a.DemoKeys = hashed
		case "forward_key":
			a.ForwardKey, err = caddyfileutil.OptionalBool(d, directive)
		case "database_url":
			a.DatabaseURL, err = caddyfileutil.OptionalValue(d, directive, "URL")
		case "cache_ttl":
			a.CacheTTL, err = caddyfileutil.Duration(d, directive, "30s or 15m")
		case "negative_cache_ttl":
			a.NegativeCacheTTL, err = caddyfileutil.Duration(d, directive, "30s or 15m")
		case "refresh_interval":
			a.RefreshInterval, err = caddyfileutil.Duration(d, directive, "30s or 15m")
		case "cache_size":
			a.CacheSize, err = caddyfileutil.Int(d, directive, "entries", 1, keystore.MaxCacheSize)
		case "negative_cache_size":
			a.NegativeCacheSize, err = caddyfileutil.Int(d, directive, "entries", 1, keystore.MaxCacheSize)
		default:
			return caddyfileutil.Unknown(d, directive, "keys", "key", "demo_keys", "forward_key", "database_url", "cache_ttl",
				"negative_cache_ttl", "refresh_interval", "cache_size", "negative_cache_size")
		}
		if err != nil {
			return err
		}
	}
	return nil
}
