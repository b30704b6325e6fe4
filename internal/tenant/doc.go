// Package tenant holds the vocabulary shared by Tenantgate's Caddy modules:
// the tenant identity that tenant_auth hands to tenant_ratelimit, the JSON
// error envelope every gateway-generated error is rendered with, request
// IDs, the health registry that modules report their dependencies to, and
// the built-in plans with the registry that checks every plan handed out
// has limits.
package tenant
