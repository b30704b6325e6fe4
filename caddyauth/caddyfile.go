package caddyauth

import (
	"strconv"
	"strings"

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
//	    forward_key [true|false]
//	}
//
// keys takes the VALID_API_KEYS format and may be empty; key is repeatable.
func (a *TenantAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("tenant_auth: unexpected argument %q; settings go in a block", d.Val())
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "keys":
			list, err := ParseKeyList(strings.Join(d.RemainingArgs(), ","))
			if err != nil {
				return d.Errf("tenant_auth: keys: %v (expected key:org_id:plan[,key:org_id:plan…])", err)
			}
			a.Keys = append(a.Keys, list...)
		case "key":
			args := d.RemainingArgs()
			if len(args) != 3 {
				return d.Errf("tenant_auth: key: expected <key> <org_id> <plan>, got %d arguments", len(args))
			}
			k := StaticKey{Key: args[0], OrgID: args[1], Plan: args[2]}
			if err := k.Validate(); err != nil {
				return d.Errf("tenant_auth: key: %v", err)
			}
			a.Keys = append(a.Keys, k)
		case "forward_key":
			v, err := parseOptionalBool(d)
			if err != nil {
				return err
			}
			a.ForwardKey = v
		default:
			return d.Errf("tenant_auth: unknown subdirective %q (expected one of: %s)", sub, strings.Join(subdirectives, ", "))
		}
	}
	return nil
}

// subdirectives lists what tenant_auth accepts, for error messages.
var subdirectives = []string{"keys", "key", "forward_key"}

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
