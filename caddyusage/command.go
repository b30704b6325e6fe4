package caddyusage

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/usagestore"
)

// Environment variables the usage commands read when a flag is not given.
const (
	usageDatabaseURLEnv = "USAGE_DATABASE_URL"
	databaseURLEnv      = "DATABASE_URL"
	kafkaBrokersEnv     = "KAFKA_BROKERS"
	kafkaTopicEnv       = "KAFKA_TOPIC"
	adminAddrEnv        = "ADMIN_ADDR"
	// kafkaSASLUserEnv and kafkaSASLPasswordEnv hold the consumer's SASL
	// credentials (kept off the command line).
	kafkaSASLUserEnv     = "KAFKA_SASL_USERNAME"
	kafkaSASLPasswordEnv = "KAFKA_SASL_PASSWORD"
)

// UsageCommand is `caddy tenant usage`: ingest (the Kafka consumer) and
// report.
func UsageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Ingests and reports usage events (tenant_usage)",
		Long: `
Usage analytics of the tenant_usage pipeline.

  caddy tenant usage ingest [--brokers LIST] [--topic T] [--group G] [--database-url URL]
  caddy tenant usage report --org ID [--since 24h | --from T --to T] [--by minute|hour|day]
                            [--group-by key,service,outcome] [--json|--csv]

The usage database is --database-url, else $USAGE_DATABASE_URL, else
$DATABASE_URL (migrate it with ` + "`caddy tenant migrate`" + `). Without any, report
asks the running gateway's memory sink through its admin endpoint
(--address, else $ADMIN_ADDR, else localhost:2019).
`,
	}
	cmd.PersistentFlags().String("database-url", "", "usage database URL (default $"+usageDatabaseURLEnv+", then $"+databaseURLEnv+")")
	cmd.AddCommand(ingestCommand(), reportCommand())
	return cmd
}

func usageDatabaseURL(cmd *cobra.Command) string {
	if v, _ := cmd.Flags().GetString("database-url"); v != "" {
		return v
	}
	if v := os.Getenv(usageDatabaseURLEnv); v != "" {
		return v
	}
	return os.Getenv(databaseURLEnv)
}

func ingestCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "ingest",
		Short: "Consumes usage events from Kafka into the usage database until stopped (SIGTERM)",
		Args:  cobra.NoArgs,
		RunE:  runIngest,
	}
	f := c.Flags()
	f.String("brokers", "", "Kafka brokers, host:port[,host:port…] (default $"+kafkaBrokersEnv+")")
	f.String("topic", "", "topic (default $"+kafkaTopicEnv+", else "+defaultTopic+")")
	f.String("group", defaultGroup, "consumer group")
	f.Int("batch", defaultConsumerBatch, "records per transaction, at most")
	f.String("raw-retention", "168h", "raw events older than this are dead-lettered as late and dropped")
	f.String("metrics-addr", "", "serve Prometheus metrics on this host:port at /metrics (default: off)")
	f.String("session-timeout", "45s", "how long the group waits for a silent member before reassigning its partitions")
	f.Bool("tls", false, "connect to the brokers with TLS (system roots)")
	f.String("sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512 (credentials from $"+kafkaSASLUserEnv+" and $"+kafkaSASLPasswordEnv+")")
	return c
}

func runIngest(cmd *cobra.Command, _ []string) error {
	brokers, _ := cmd.Flags().GetString("brokers")
	if brokers == "" {
		brokers = os.Getenv(kafkaBrokersEnv)
	}
	list := strings.FieldsFunc(brokers, func(r rune) bool { return r == ',' || r == ' ' })
	if len(list) == 0 {
		return fmt.Errorf("no Kafka brokers: give --brokers or set %s", kafkaBrokersEnv)
	}
	topic, _ := cmd.Flags().GetString("topic")
	if topic == "" {
		topic = os.Getenv(kafkaTopicEnv)
	}
	group, _ := cmd.Flags().GetString("group")
	batch, _ := cmd.Flags().GetInt("batch")
	if batch < 1 || batch > 100_000 {
		return fmt.Errorf("--batch: expected 1 to 100000 records, got %d", batch)
	}
	retention, err := durationFlag(cmd, "raw-retention")
	if err != nil {
		return err
	}
	session, err := durationFlag(cmd, "session-timeout")
	if err != nil {
		return err
	}
	dsn := usageDatabaseURL(cmd)
	if dsn == "" {
		return fmt.Errorf("no usage database: give --database-url or set %s or %s", usageDatabaseURLEnv, databaseURLEnv)
	}
	var clientOpts []kgo.Opt
	if useTLS, _ := cmd.Flags().GetBool("tls"); useTLS {
		clientOpts = append(clientOpts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if mech, _ := cmd.Flags().GetString("sasl"); mech != "" {
		m, err := saslMechanism(mech, os.Getenv(kafkaSASLUserEnv), os.Getenv(kafkaSASLPasswordEnv))
		if err != nil {
			return fmt.Errorf("--sasl: %w", err)
		}
		clientOpts = append(clientOpts, kgo.SASL(m))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := caddy.Log().Named("usage.ingest")
	store, err := openStore(ctx, dsn, usagestore.Options{RawRetention: retention, ApplicationName: "tenantgate-usage-ingest"})
	if err != nil {
		return err
	}
	defer store.Close()

	reg := prometheus.NewRegistry()
	if addr, _ := cmd.Flags().GetString("metrics-addr"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		logger.Info("serving metrics", zap.String("address", ln.Addr().String()))
	}
	go store.MaintainEvery(ctx, time.Hour, func(err error) { logger.Warn("usage partition maintenance failed", zap.Error(err)) })
	logger.Info("consuming usage events", zap.Strings("brokers", list), zap.String("topic", cmp.Or(topic, defaultTopic)), zap.String("group", group))
	err = runConsumer(ctx, consumerConfig{Brokers: list, Topic: topic, Group: group, MaxBatch: batch,
		SessionTimeout: session, Store: store, Logger: logger, Metrics: reg, ClientOpts: clientOpts})
	logger.Info("consumer stopped")
	return err
}

// openStore opens the usage store and checks that its schema exists.
func openStore(ctx context.Context, dsn string, opts usagestore.Options) (*usagestore.Store, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	store, err := usagestore.Open(cctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	if _, err := store.Timescale(cctx); err != nil {
		store.Close()
		return nil, oneLine(fmt.Errorf("cannot use the usage database: %w", err))
	}
	var exists bool
	if err := store.Pool().QueryRow(cctx, `SELECT to_regclass('usage_events') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		store.Close()
		if err != nil {
			return nil, oneLine(fmt.Errorf("cannot use the usage database: %w", err))
		}
		return nil, errNoUsageSchema
	}
	return store, nil
}

func reportCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "report",
		Short: "Shows an organization's usage per time bucket",
		Args:  cobra.NoArgs,
		RunE:  runReport,
	}
	f := c.Flags()
	f.String("org", "", "organization ID (required)")
	f.String("since", "24h", "report the period up to now of this length")
	f.String("from", "", "start of the period (RFC 3339; overrides --since)")
	f.String("to", "", "end of the period (RFC 3339; default now)")
	f.String("by", "hour", "time bucket: minute, hour or day")
	f.String("group-by", "", "also group by any of key,service,outcome")
	f.Bool("json", false, "JSON output")
	f.Bool("csv", false, "CSV output")
	f.String("address", "", "admin endpoint of the running gateway, asked when there is no database (default $"+adminAddrEnv+", else localhost:2019)")
	return c
}

func runReport(cmd *cobra.Command, _ []string) error {
	q, err := reportQueryFromFlags(cmd, time.Now())
	if err != nil {
		return err
	}
	asJSON, _ := cmd.Flags().GetBool("json")
	asCSV, _ := cmd.Flags().GetBool("csv")
	if asJSON && asCSV {
		return errors.New("--json and --csv exclude each other")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rows []usagestore.ReportRow
	address, _ := cmd.Flags().GetString("address")
	dsn := usageDatabaseURL(cmd)
	if dsn != "" && address == "" {
		store, err := openStore(ctx, dsn, usagestore.Options{MaxConns: 1, ApplicationName: "tenantgate-cli"})
		if err != nil {
			return err
		}
		defer store.Close()
		if rows, err = store.Report(ctx, q); err != nil {
			return oneLine(err)
		}
	} else {
		if address == "" {
			address = os.Getenv(adminAddrEnv)
		}
		if address == "" {
			address = "localhost:2019"
		}
		if rows, err = reportFromGateway(ctx, address, q); err != nil {
			return err
		}
	}
	out := cmd.OutOrStdout()
	switch {
	case asJSON:
		if rows == nil {
			rows = []usagestore.ReportRow{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case asCSV:
		return WriteCSV(out, q, rows)
	}
	return writeTable(out, q, rows)
}

func reportQueryFromFlags(cmd *cobra.Command, now time.Time) (usagestore.ReportQuery, error) {
	f := cmd.Flags()
	org, _ := f.GetString("org")
	if org == "" {
		return usagestore.ReportQuery{}, errors.New("--org is required")
	}
	since, err := durationFlag(cmd, "since")
	if err != nil {
		return usagestore.ReportQuery{}, err
	}
	q := usagestore.ReportQuery{OrgID: org, From: now.Add(-since), To: now}
	for name, into := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if s, _ := f.GetString(name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return q, fmt.Errorf("--%s: expected an RFC 3339 time such as 2026-01-25T00:00:00Z, got %q", name, s)
			}
			*into = t
		}
	}
	by, _ := f.GetString("by")
	if q.Granularity, err = usagestore.ParseGranularity(by); err != nil {
		return q, fmt.Errorf("--by: %w", err)
	}
	groupBy, _ := f.GetString("group-by")
	if q.GroupBy, err = usagestore.ParseGroupBy(groupBy); err != nil {
		return q, fmt.Errorf("--group-by: %w", err)
	}
	return q, q.Validate()
}

// reportFromGateway asks the running gateway's admin endpoint.
func reportFromGateway(ctx context.Context, address string, q usagestore.ReportQuery) ([]usagestore.ReportRow, error) {
	v := url.Values{}
	v.Set("org", q.OrgID)
	v.Set("from", q.From.UTC().Format(time.RFC3339Nano))
	v.Set("to", q.To.UTC().Format(time.RFC3339Nano))
	v.Set("by", string(q.Granularity))
	v.Set("group_by", usagestore.FormatGroupBy(q.GroupBy))
	host := strings.TrimPrefix(strings.TrimPrefix(address, "http://"), "tcp/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+reportPath+"?"+v.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("--address %s: %w", address, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no usage database configured, and the gateway's admin endpoint %s does not answer (start the gateway, or give --database-url): %w", host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("gateway %s: reading its answer: %w", host, err)
	}
	if resp.StatusCode != http.StatusOK {
		var apiErr struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &apiErr)
		if apiErr.Error == "" {
			apiErr.Error = strings.TrimSpace(string(body))
		}
		return nil, fmt.Errorf("gateway %s: %s", host, apiErr.Error)
	}
	var r reportResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("gateway %s: unexpected answer: %w", host, err)
	}
	return r.Rows, nil
}

// durationFlag reads a positive duration flag (Caddy syntax: 24h, 7d).
func durationFlag(cmd *cobra.Command, name string) (time.Duration, error) {
	s, _ := cmd.Flags().GetString(name)
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--%s: expected a positive duration such as 24h or 7d, got %q", name, s)
	}
	return d, nil
}

// errNoUsageSchema says what to run when the usage tables are missing.
var errNoUsageSchema = errors.New("the database has no usage schema: run `caddy tenant migrate` first")

// oneLine puts an error on one line and explains a missing schema.
func oneLine(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return errNoUsageSchema
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}
