// Package migrations holds Tenantgate's PostgreSQL schema as numbered SQL
// migrations (goose format). `caddy tenant migrate` applies them; applying
// them again is a no-op.
package migrations

import "embed"

// FS holds the migration files, in version order by name.
//
//go:embed *.sql
var FS embed.FS
