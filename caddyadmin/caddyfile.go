package caddyadmin

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective(moduleName, parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder(moduleName, httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterHandlerDirective("tenant_usage_report", parseReportCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("tenant_usage_report", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(TenantAdmin)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	tenant_admin [<matcher>] {
//	    token              [<token>]
//	    database_url       [<url>]
//	    usage_database_url [<url>]
//	    idempotency_ttl    <duration>
//	}
//
// token, database_url and usage_database_url may be empty (an unset
// environment variable): no token, no database.
func (a *TenantAdmin) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("tenant_admin: unexpected argument %q; settings go in a block", d.Val())
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "token", "database_url", "usage_database_url":
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.Errf("tenant_admin: %s: expected one value, got %d", sub, len(args))
			}
			v := strings.Join(args, "")
			switch sub {
			case "token":
				a.Token = v
			case "database_url":
				a.DatabaseURL = v
			default:
				a.UsageDatabaseURL = v
			}
		case "idempotency_ttl":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.Errf("tenant_admin: idempotency_ttl: expected one duration such as 24h, got %d arguments", len(args))
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("tenant_admin: idempotency_ttl: expected a positive duration such as 24h, got %q", args[0])
			}
			a.IdempotencyTTL = caddy.Duration(dur)
		default:
			return d.Errf("tenant_admin: unknown subdirective %q (expected one of: token, database_url, usage_database_url, idempotency_ttl)", sub)
		}
	}
	return nil
}

func parseReportCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	u := new(UsageReport)
	err := u.UnmarshalCaddyfile(h.Dispenser)
	return u, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	tenant_usage_report [<matcher>] {
//	    database_url [<url>]
//	}
func (u *UsageReport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("tenant_usage_report: unexpected argument %q; settings go in a block", d.Val())
	}
	for d.NextBlock(0) {
		switch sub := d.Val(); sub {
		case "database_url":
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.Errf("tenant_usage_report: database_url: expected one URL, got %d arguments", len(args))
			}
			u.DatabaseURL = strings.Join(args, "")
		default:
			return d.Errf("tenant_usage_report: unknown subdirective %q (expected: database_url)", sub)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*TenantAdmin)(nil)
	_ caddyfile.Unmarshaler = (*UsageReport)(nil)
)
