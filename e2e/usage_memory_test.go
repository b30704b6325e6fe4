package e2e

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The default Caddyfile with no services keeps usage in memory: after
// requests with the demo key, `caddy tenant usage report --org org_1` (no
// database) asks the running gateway and shows them, 429s and errors
// included, 401s not.
func TestUsageDefaultCaddyfileReportFromMemory(t *testing.T) {
	demo := freePort(t)
	g := startProcess(t, readDefaultCaddyfile(t), "DEMO_BACKEND_PORT="+demo, "API_SERVICE_URL=127.0.0.1:"+demo,
		"DATABASE_URL=", "USAGE_DATABASE_URL=", "KAFKA_BROKERS=")
	c := newUsageClient(g.URL, "sk_test_abc123")
	for range 7 {
		c.get("/api/users")
	}
	c.get("/nowhere") // 404 from the gateway: authenticated, so counted
	anonymous := newUsageClient(g.URL, "")
	anonymous.get("/api/users") // 401: no tenant, no event

	// Events are handed off as their requests end, just after the client
	// has the answers: poll until all are in, within the freshness bound.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cmd := exec.Command(gatewayBinary(t), "tenant", "usage", "report", "--org", "org_1", "--by", "day", "--group-by", "service", "--json")
		cmd.Env = append(withoutDatabaseEnv(), "ADMIN_ADDR="+g.AdminAddr)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("caddy tenant usage report: %v\n%s", err, out)
		}
		var rows []struct {
			Service  string `json:"service"`
			Requests int64  `json:"requests"`
			Allowed  int64  `json:"allowed"`
			BytesOut int64  `json:"bytes_out"`
			P50      int64  `json:"latency_p50_us"`
		}
		if err := json.Unmarshal(out, &rows); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, out)
		}
		got := map[string]int64{}
		for _, r := range rows {
			got[r.Service] += r.Requests
			if r.Requests > 0 && (r.BytesOut == 0 || r.P50 == 0) {
				t.Errorf("row %+v lacks bytes or latency", r)
			}
		}
		if got["api"] == 7 && got["nowhere"] == 1 && len(got) == 2 {
			break
		}
		if got["api"] > 7 || got["nowhere"] > 1 || len(got) > 2 || time.Now().After(deadline) {
			t.Fatalf("report by service %v, want api 7 and nowhere 1\n%s", got, out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The human table names the organization's usage too.
	cmd := exec.Command(gatewayBinary(t), "tenant", "usage", "report", "--org", "org_1")
	cmd.Env = append(withoutDatabaseEnv(), "ADMIN_ADDR="+g.AdminAddr)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) == 0 {
		t.Fatalf("table report: %v\n%s", err, out)
	}
}

// `caddy reload` keeps the process's usage pipeline: events before and
// after the reload are all in the memory report, none lost or doubled.
func TestUsageReloadKeepsThePipeline(t *testing.T) {
	const cfg = `{
	admin {$ADMIN_ADDR}
}
:{$GATEWAY_PORT} {
	route {
		tenant_usage SERVICE
		tenant_auth {
			key sk_test_reloadreloadreloadreload org_reload premium
		}
		respond "ok" 200
	}
}
`
	g := startProcess(t, strings.Replace(cfg, "SERVICE", "before", 1))
	c := newUsageClient(g.URL, "sk_test_reloadreloadreloadreload")
	for range 30 {
		c.get("/x")
	}
	g.Reload(t, strings.Replace(cfg, "SERVICE", "after", 1))
	for range 20 {
		c.get("/x")
	}
	// An event is handed off when its request ends, just after the client
	// has the answer: poll until all are in, within the freshness bound.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cmd := exec.Command(gatewayBinary(t), "tenant", "usage", "report", "--org", "org_reload", "--by", "day", "--group-by", "service", "--csv")
		cmd.Env = append(withoutDatabaseEnv(), "ADMIN_ADDR="+g.AdminAddr)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("report: %v\n%s", err, out)
		}
		got := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
			f := strings.Split(line, ",")
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("report line %q: %v", line, err)
			}
			got[f[1]] = n
		}
		switch {
		case got["before"] == 30 && got["after"] == 20 && len(got) == 2:
			return
		case got["before"] > 30 || got["after"] > 20 || len(got) > 2 || time.Now().After(deadline):
			t.Fatalf("requests by service %v, want before 30 and after 20\n%s", got, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
