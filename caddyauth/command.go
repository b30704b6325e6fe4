package caddyauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/tenantgate/tenantgate/caddyusage"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
	"github.com/tenantgate/tenantgate/migrations"
)

// databaseURLEnv is read when --database-url is not given.
const databaseURLEnv = "DATABASE_URL"

// cliTimeout bounds one CLI command's work against the database, and
// cliConnectTimeout the connection to it.
const (
	cliTimeout        = 30 * time.Second
	cliConnectTimeout = 5 * time.Second
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "tenant",
		Usage: "<migrate|org|key|usage> …",
		Short: "Manages Tenantgate's organizations, API keys and usage reports",
		Long: `
Manages the PostgreSQL key database that tenant_auth reads (database_url),
and ingests and reports usage events.

  caddy tenant migrate
  caddy tenant org create --name N [--plan P] [--per-minute N --per-day N --burst N] [--json]
  caddy tenant org list [--json]
  caddy tenant org disable ID [--json]
  caddy tenant org enable ID [--json]
  caddy tenant key create --org-id ID --name N [--plan P] [--expires-in DUR] [--test] [--json]
  caddy tenant key list --org-id ID [--json]
  caddy tenant key revoke ID [--json]
  caddy tenant key rotate ID [--grace DUR] [--expires-in DUR] [--json]
  caddy tenant usage ingest --brokers B --topic T --group G
  caddy tenant usage report --org ID [--since 24h] [--by minute|hour|day] [--group-by …] [--json|--csv]

The database is --database-url, else $DATABASE_URL. Plans are basic,
premium and enterprise plus the comma-separated --allowed-plans (else
$TENANT_PLANS), for plans declared in the Caddyfile's tenant_ratelimit.
A key is printed once, at creation; only its SHA-256 and its first 12
characters are stored. Errors exit non-zero with one line, and write nothing.
`,
		CobraFunc: buildTenantCommand,
	})
}

// buildTenantCommand adds the subcommands to the `tenant` command.
func buildTenantCommand(cmd *cobra.Command) {
	cmd.PersistentFlags().String("database-url", "", "PostgreSQL URL (default $"+databaseURLEnv+")")
	cmd.AddCommand(&cobra.Command{
		Use:   "migrate",
		Short: "Creates or upgrades the key database schema (idempotent)",
		Args:  cobra.NoArgs,
		RunE:  runMigrate,
	})
	for _, c := range []*cobra.Command{orgCommand(), keyCommand()} {
		c.PersistentFlags().String("allowed-plans", "", "extra plan names, comma-separated (default $"+tenant.PlansEnv+")")
		cmd.AddCommand(c)
	}
	cmd.AddCommand(caddyusage.UsageCommand())
}

func runMigrate(cmd *cobra.Command, _ []string) error {
	cfg, err := connConfig(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	res, err := migrations.Up(ctx, cfg)
	if err != nil {
		return dbError(err)
	}
	out := cmd.OutOrStdout()
	for _, name := range res.Applied {
		fmt.Fprintf(out, "applied %s\n", name)
	}
	if len(res.Applied) == 0 {
		fmt.Fprintf(out, "schema is up to date (version %d)\n", res.Version)
	} else {
		fmt.Fprintf(out, "schema is at version %d\n", res.Version)
	}
	return nil
}

// connConfig reads the database URL from --database-url or DATABASE_URL.
func connConfig(cmd *cobra.Command) (*pgx.ConnConfig, error) {
	dsn, _ := cmd.Flags().GetString("database-url")
	if dsn == "" {
		dsn = os.Getenv(databaseURLEnv)
	}
	if dsn == "" {
		return nil, fmt.Errorf("no database: give --database-url or set %s", databaseURLEnv)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = cliConnectTimeout
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "tenantgate-cli"
	}
	return cfg, nil
}

// withDB connects, runs f with the store operations on that connection,
// and closes it.
func withDB(cmd *cobra.Command, f func(ctx context.Context, admin *keystore.Admin) error) error {
	cfg, err := connConfig(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return dbError(fmt.Errorf("cannot connect to PostgreSQL: %w", err))
	}
	defer conn.Close(context.Background())
	return dbError(f(ctx, keystore.NewAdmin(conn)))
}

// cliContext is cancelled by Ctrl-C or after cliTimeout.
func cliContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	return ctx, func() { cancel(); stop() }
}

// dbError explains the database errors an operator can fix, and puts
// every error on one line (pgx lists each connection attempt on its own).
func dbError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		return errors.New("the database has no Tenantgate schema: run `caddy tenant migrate` first")
	}
	var parts []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !slices.Contains(parts, line) {
			parts = append(parts, line)
		}
	}
	return errors.New(strings.Join(parts, " "))
}

// planSet is the plans the CLI accepts: the built-in plans, and the
// plans declared with `plan` lines in the Caddyfile's tenant_ratelimit that
// --allowed-plans or TENANT_PLANS lists.
type planSet []string

// plans is the set of plans the CLI accepts.
func plans(cmd *cobra.Command) (planSet, error) {
	extra, _ := cmd.Flags().GetString("allowed-plans")
	if extra == "" {
		extra = os.Getenv(tenant.PlansEnv)
	}
	listed, err := tenant.ParsePlanNames(extra)
	if err != nil {
		return nil, fmt.Errorf("allowed plans: %w", err)
	}
	set := planSet(tenant.BuiltinPlanNames())
	for _, p := range listed {
		if !slices.Contains(set, p) {
			set = append(set, p)
		}
	}
	return set, nil
}

// check refuses a plan that is not in the set.
func (s planSet) check(plan string) error {
	if slices.Contains(s, plan) {
		return nil
	}
	shown := plan
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return fmt.Errorf("unknown plan %q (known: %s; allow custom plans with --allowed-plans or %s)",
		shown, strings.Join(s, ", "), tenant.PlansEnv)
}

// parseID checks that arg is a UUID. The value is not echoed: it may be a
// key pasted by mistake.
func parseID(what, arg string) (string, error) {
	id, err := uuid.Parse(arg)
	if err != nil {
		return "", fmt.Errorf("malformed %s: want a UUID such as 0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", what)
	}
	return id.String(), nil
}

// orgIDFlag reads the required --org-id flag.
func orgIDFlag(cmd *cobra.Command) (string, error) {
	arg, _ := cmd.Flags().GetString("org-id")
	if strings.TrimSpace(arg) == "" {
		return "", errors.New("--org-id is required: the organization's ID, as `caddy tenant org create` printed it or `caddy tenant org list` shows it")
	}
	return parseID("--org-id", arg)
}

// cleanName trims a name and checks it as the store does.
func cleanName(what, name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", fmt.Errorf("--name is required: the %s name, 1-%d printable characters", what, keystore.MaxNameLen)
	}
	name, err := keystore.CheckName(what, name)
	if err != nil {
		return "", fmt.Errorf("--name: %w", err)
	}
	return name, nil
}

// durationFlag reads a duration flag (Caddy syntax: 720h, 30d) that must be
// positive, or zero if allowZero.
func durationFlag(cmd *cobra.Command, name string, allowZero bool) (time.Duration, error) {
	s, _ := cmd.Flags().GetString(name)
	if s == "" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d < 0 || (d == 0 && !allowZero) {
		return 0, fmt.Errorf("--%s: expected a positive duration such as 720h or 30d, got %q", name, s)
	}
	return d, nil
}

// printJSON writes v as indented JSON, not HTML-escaped.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // a name such as "A&B <Corp>" reads as written
	return enc.Encode(v)
}

func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

// formatTime shows an optional timestamp in UTC, or alt when absent.
func formatTime(t *time.Time, alt string) string {
	if t == nil {
		return alt
	}
	return t.UTC().Format(time.RFC3339)
}

// allPages collects every page of a store listing.
func allPages[T any](list func(cursor string) ([]T, string, error)) ([]T, error) {
	var all []T
	cursor := ""
	for {
		page, next, err := list(cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}
