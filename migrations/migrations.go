// Package migrations holds Tenantgate's PostgreSQL schema (the key
// tables and the usage tables) as numbered SQL migrations in goose format,
// and Up, the one runner that applies them: `caddy tenant migrate`, the
// stores' tests and the end-to-end tests all migrate through it.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"path"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// files holds the migration files, in version order by name.
//
//go:embed *.sql
var files embed.FS

// versionTable records which migrations are applied.
const versionTable = "tenantgate_schema_migrations"

// Result is what Up did.
type Result struct {
	// Applied names the migrations applied now, in order (none when the
	// schema was up to date).
	Applied []string `json:"applied"`
	// Version is the schema version afterwards.
	Version int64 `json:"version"`
}

// Up applies the pending migrations to the database of cfg. A PostgreSQL
// advisory lock serialises concurrent runs (several gateways or deploy
// jobs migrating at once); applying twice is a no-op. On failure, Applied
// names the migrations that were applied before it.
func Up(ctx context.Context, cfg *pgx.ConnConfig) (Result, error) {
	var res Result
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return res, fmt.Errorf("preparing the migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithTableName(versionTable), goose.WithSessionLocker(locker))
	if err != nil {
		return res, fmt.Errorf("loading migrations: %w", err)
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			res.Applied = append(res.Applied, path.Base(r.Source.Path))
		}
	}
	if err != nil {
		return res, fmt.Errorf("migrating: %w", err)
	}
	if res.Version, err = p.GetDBVersion(ctx); err != nil {
		return res, fmt.Errorf("reading the schema version: %w", err)
	}
	return res, nil
}
