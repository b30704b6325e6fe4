package keystore

import (
	"context"
	"fmt"
	"path"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tenantgate/tenantgate/migrations"
)

// migrationsTable records which migrations are applied.
const migrationsTable = "tenantgate_schema_migrations"

// MigrationResult is what Migrate did.
type MigrationResult struct {
	// Applied names the migrations applied now, in order (none when the
	// schema was up to date).
	Applied []string `json:"applied"`
	// Version is the schema version afterwards.
	Version int64 `json:"version"`
}

// Migrate applies the pending migrations of migrations/ to the database.
// A Postgres advisory lock serialises concurrent runs (several gateways or
// deploy jobs migrating at once); applying twice is a no-op.
func Migrate(ctx context.Context, cfg *pgx.ConnConfig) (MigrationResult, error) {
	var res MigrationResult
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return res, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithTableName(migrationsTable), goose.WithSessionLocker(locker))
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
