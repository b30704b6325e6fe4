package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	// The modules under test.
	_ "github.com/tenantgate/tenantgate"
)

// Ports used by the e2e Caddyfiles. caddytest's admin is on 2999.
const (
	gatewayPort = "18080"
	backendPort = "18090"
	gatewayURL  = "http://localhost:" + gatewayPort
)

// globalOptions starts every e2e Caddyfile: caddytest requires its admin
// address, and the fixed ports keep runs reproducible. extra is inserted
// into the block (e.g. a named log).
func globalOptions(extra string) string {
	return `{
	admin localhost:2999
	http_port 18081
	https_port 18443
	grace_period 1ns
` + extra + `
}
`
}

// startGateway loads a Caddyfile (the global options block is prepended)
// into the in-process Caddy. caddytest only marks a failed load and skips
// when its prerequisites are missing; here a failed load stops the test and,
// under CI=true, a skip is a failure.
func startGateway(t *testing.T, caddyfile string) *caddytest.Tester {
	t.Helper()
	return startGatewayWithGlobals(t, "", caddyfile)
}

// startGatewayWithGlobals is startGateway with extra global options.
func startGatewayWithGlobals(t *testing.T, globals, caddyfile string) *caddytest.Tester {
	t.Helper()
	t.Cleanup(func() {
		if t.Skipped() && os.Getenv("CI") == "true" {
			t.Errorf("e2e test skipped under CI=true: caddytest could not start Caddy")
		}
	})
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions(globals)+caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// envelope is the JSON error body of DESIGN §3.
type envelope struct {
	Error struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
	Timestamp string `json:"timestamp"`
	RequestID string `json:"request_id"`
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, tester *caddytest.Tester, method, url string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, body
}

// assertEnvelope checks status, content type and envelope shape, and returns
// the decoded envelope.
func assertEnvelope(t *testing.T, resp *http.Response, body []byte, status int) envelope {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("body is not the JSON envelope: %v: %s", err, body)
	}
	if env.Error.Code != status {
		t.Errorf("error.code = %d, want %d", env.Error.Code, status)
	}
	if env.Error.Message == "" {
		t.Errorf("error.message is empty")
	}
	if _, err := time.Parse(time.RFC3339, env.Timestamp); err != nil {
		t.Errorf("timestamp %q is not RFC 3339: %v", env.Timestamp, err)
	}
	if env.RequestID == "" {
		t.Errorf("request_id is empty")
	}
	if got := resp.Header.Get("X-Request-ID"); got != env.RequestID {
		t.Errorf("X-Request-ID header %q != envelope request_id %q", got, env.RequestID)
	}
	return env
}
