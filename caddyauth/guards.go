package caddyauth

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Interface guards
var (
	_ caddy.Provisioner           = (*TenantAuth)(nil)
	_ caddy.CleanerUpper          = (*TenantAuth)(nil)
	_ caddy.Destructor            = (*pgBackend)(nil)
	_ KeyStore                    = pgKeys{}
	_ caddyhttp.MiddlewareHandler = (*TenantAuth)(nil)
	_ caddyfile.Unmarshaler       = (*TenantAuth)(nil)
)
