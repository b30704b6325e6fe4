package caddyadmin

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
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
	if err := caddyfileutil.NoInlineArgs(d, moduleName); err != nil {
		return err
	}
	once := caddyfileutil.NewOnce(moduleName)
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "token":
			a.Token, err = caddyfileutil.OptionalValue(d, moduleName, "value")
		case "database_url":
			a.DatabaseURL, err = caddyfileutil.OptionalValue(d, moduleName, "value")
		case "usage_database_url":
			a.UsageDatabaseURL, err = caddyfileutil.OptionalValue(d, moduleName, "value")
		case "idempotency_ttl":
			a.IdempotencyTTL, err = caddyfileutil.Duration(d, moduleName, "24h")
		default:
			return caddyfileutil.Unknown(d, moduleName, "token", "database_url", "usage_database_url", "idempotency_ttl")
		}
		if err != nil {
			return err
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
	const directive = "tenant_usage_report"
	d.Next() // directive name
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return err
	}
	once := caddyfileutil.NewOnce(directive)
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "database_url":
			u.DatabaseURL, err = caddyfileutil.OptionalValue(d, directive, "URL")
		default:
			return caddyfileutil.Unknown(d, directive, "database_url")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*TenantAdmin)(nil)
	_ caddyfile.Unmarshaler = (*UsageReport)(nil)
)
