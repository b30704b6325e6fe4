package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/tenantgate/tenantgate/internal/testenv"

	// The modules under test.
	_ "github.com/tenantgate/tenantgate"
)

// testPorts are the TCP ports one test's in-process Caddy listens on,
// chosen free when the test starts, so e2e runs on a busy machine (other
// test binaries, benchmarks, other checkouts) never collide. The only fixed
// port is caddytest's admin endpoint, localhost:2999, which every test
// binary shares under the e2e lock.
type testPorts struct {
	gateway string // the gateway site of the test's Caddyfile
	backend string // a backend site, when the Caddyfile has one
	http    string // Caddy's http_port (global option)
	https   string // Caddy's https_port (global option)
}

// newTestPorts chooses four distinct free ports on 127.0.0.1: all are held
// open until every one is chosen, then released for Caddy to bind.
func newTestPorts(t *testing.T) testPorts {
	t.Helper()
	ports := freePorts(t, 4)
	return testPorts{gateway: ports[0], backend: ports[1], http: ports[2], https: ports[3]}
}

// gatewayURL is the base URL of the gateway site.
func (p testPorts) gatewayURL() string { return "http://localhost:" + p.gateway }

// globalOptions starts every e2e Caddyfile: caddytest requires its admin
// address; http_port and https_port are the test's own free ports. extra is
// inserted into the block (e.g. a named log).
func globalOptions(p testPorts, extra string) string {
	return `{
	admin localhost:2999
	http_port ` + p.http + `
	https_port ` + p.https + `
	grace_period 1ns
` + extra + `
}
`
}

// startGateway loads a Caddyfile (the global options block is prepended)
// into the in-process Caddy. caddytest only marks a failed load and skips
// when its prerequisites are missing; here a failed load stops the test and,
// under CI=true, a skip is a failure.
func startGateway(t *testing.T, p testPorts, caddyfile string) *caddytest.Tester {
	t.Helper()
	return startGatewayWithGlobals(t, p, "", caddyfile)
}

// startGatewayWithGlobals is startGateway with extra global options.
func startGatewayWithGlobals(t *testing.T, p testPorts, globals, caddyfile string) *caddytest.Tester {
	t.Helper()
	t.Cleanup(func() {
		if t.Skipped() && testenv.InCI() {
			t.Errorf("e2e test skipped under CI=true: caddytest could not start Caddy")
		}
	})
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions(p, globals)+caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// envelope is the JSON body of every error the gateway itself answers
// (tenant.Envelope), decoded on its own so the tests check the wire format.
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

// TestGatewayPortsAreChosenFree: another program holding the fixed ports
// e2e tests used to listen on (18080, 18090, 18081, 18443) does not keep a
// test's gateway from starting: its ports are chosen free.
func TestGatewayPortsAreChosenFree(t *testing.T) {
	for _, port := range []string{"18080", "18090", "18081", "18443"} {
		if ln, err := net.Listen("tcp", ":"+port); err == nil { // taken already, else by us
			defer ln.Close()
		}
	}
	p := newTestPorts(t)
	tester := startGateway(t, p, `
:`+p.gateway+` {
	respond "ok" 200
}`)
	resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("status %d body %q, want 200 ok", resp.StatusCode, body)
	}
}

// keyedResponse is what the tests keep of a response to a request made
// with an API key.
type keyedResponse struct {
	status int
	header http.Header
	body   []byte
}

// getWithKey sends GET url with the API key.
func getWithKey(t *testing.T, client *http.Client, url, key string) keyedResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return keyedResponse{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return keyedResponse{status: resp.StatusCode, header: resp.Header, body: body}
}
