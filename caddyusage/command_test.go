package caddyusage

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

func runUsageCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := UsageCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestReportCLIRejectsBadInput(t *testing.T) {
	t.Setenv("ADMIN_ADDR", "127.0.0.1:1") // nothing listens: no gateway is asked by accident
	for args, want := range map[string]string{
		"report":                                        "--org is required",
		"report --org o --by week":                      "--by: granularity must be minute, hour or day",
		"report --org o --group-by path":                "--group-by: group by must be a list of key, service and outcome",
		"report --org o --since -5m":                    "--since: expected a positive duration",
		"report --org o --from yesterday":               "--from: expected an RFC 3339 time",
		"report --org o --json --csv":                   "--json and --csv exclude each other",
		"report --org o --by minute --since 365d":       "too many minute buckets",
		"ingest --brokers b --database-url x --batch 0": "--batch: expected 1 to 100000",
		"ingest --database-url x":                       "no Kafka brokers",
	} {
		t.Setenv("KAFKA_BROKERS", "")
		_, err := runUsageCLI(t, strings.Fields(args)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", args, err, want)
		}
	}
}

// The report from the database: JSON, CSV and the table agree.
func TestReportCLIFromDatabase(t *testing.T) {
	store, dsn := usagetest.FreshStore(t, usagestore.Options{})
	org := usagetest.UniqueOrg("org_cli_")
	now := time.Now().UTC()
	if _, err := store.Ingest(context.Background(), usagestore.Batch{Events: usagetest.Events(70, org, now.Add(-2*time.Hour), time.Hour)}); err != nil {
		t.Fatal(err)
	}
	out, err := runUsageCLI(t, "report", "--org", org, "--database-url", dsn, "--by", "day", "--group-by", "outcome", "--csv")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "bucket,outcome,requests,allowed,429_minute,429_day,backend_errors,gateway_errors,bytes_in,bytes_out,p50_ms,p95_ms,p99_ms" {
		t.Fatalf("CSV header %q", lines[0])
	}
	total := 0
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		n := 0
		for _, c := range f[2] {
			n = n*10 + int(c-'0')
		}
		total += n
	}
	if total != 70 {
		t.Fatalf("CSV rows sum to %d requests, want 70:\n%s", total, out)
	}
	out, err = runUsageCLI(t, "report", "--org", org, "--database-url", dsn)
	if err != nil || !strings.Contains(out, "requests") || !strings.Contains(out, "p99_ms") {
		t.Fatalf("table: %v\n%s", err, out)
	}
	out, err = runUsageCLI(t, "report", "--org", "nobody", "--database-url", dsn)
	if err != nil || !strings.Contains(out, "no usage for nobody") {
		t.Fatalf("empty report: %v\n%s", err, out)
	}
}
