package migrations_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/migrations"
)

// TestUpAppliesEachMigrationOnce: the first run applies every migration in
// order, a second run applies none and reports the same version, and runs
// that race (several gateways or deploy jobs) apply each migration once.
func TestUpAppliesEachMigrationOnce(t *testing.T) {
	cfg, err := pgx.ParseConfig(testenv.FreshDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var wg sync.WaitGroup
	results := make([]migrations.Result, 3)
	errs := make([]error, len(results))
	for i := range results {
		wg.Go(func() { results[i], errs[i] = migrations.Up(ctx, cfg) })
	}
	wg.Wait()
	var applied []string
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("concurrent run %d: %v", i, errs[i])
		}
		applied = append(applied, r.Applied...)
	}
	want, err := filepath.Glob("*.sql")
	if err != nil || len(want) == 0 {
		t.Fatalf("listing the migrations: %v", err)
	}
	slices.Sort(applied)
	if !slices.Equal(applied, want) {
		t.Fatalf("concurrent runs applied %v: want each of %v once", applied, want)
	}
	for i, r := range results {
		if !slices.IsSorted(r.Applied) {
			t.Errorf("run %d applied %v: out of order", i, r.Applied)
		}
	}

	again, err := migrations.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Applied) != 0 || again.Version != results[0].Version || again.Version == 0 {
		t.Errorf("second run: %+v, want nothing applied and version %d", again, results[0].Version)
	}
}
