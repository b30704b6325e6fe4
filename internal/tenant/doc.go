// Package tenant holds the vocabulary shared by Tenantgate's Caddy modules:
// the tenant identity that tenant_auth hands to later handlers, the JSON
// error envelope every gateway-generated error is rendered with, request
// IDs, the built-in plans, and the per-config Registry through which the
// modules meet: dependency checks for tenant_health, the plans a
// tenant_ratelimit must define, and the limiters whose live state the
// admin API reads.
package tenant
