package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// adminToken is the admin token of the e2e configs.
const adminToken = "e2e-admin-token-5b0c1f2e9d8a7c6b"

// spoolDir is the usage spool of the in-process Caddy's pipeline, which
// lives as long as the test binary (TestMain removes it).
var spoolDir struct {
	once sync.Once
	path string
	err  error
}

func inProcessSpoolDir(t *testing.T) string {
	t.Helper()
	spoolDir.once.Do(func() { spoolDir.path, spoolDir.err = os.MkdirTemp("", "tenantgate-e2e-spool-") })
	if spoolDir.err != nil {
		t.Fatal(spoolDir.err)
	}
	return spoolDir.path
}

// adminClient calls an admin API and checks every answer against its
// OpenAPI document (read from the server): a status or body the document
// does not describe fails the test. It records which operation answered
// which status, so a test can check that it covered every route.
type adminClient struct {
	t     *testing.T
	base  string // http://127.0.0.1:<port> (the handler's root)
	token string
	http  *http.Client
	doc   *adminDoc

	mu   sync.Mutex
	seen map[string]map[int]bool // "GET /v1/orgs/{id}" → statuses
}

// adminDoc is the OpenAPI document served, for validating answers and
// matching paths to operations.
type adminDoc struct {
	validator validator.Validator
	mux       *http.ServeMux // doc paths → their pattern
	ops       map[string]bool
	mu        sync.Mutex // the validator is not safe for concurrent use
}

func newAdminClient(t *testing.T, base, token string) *adminClient {
	t.Helper()
	c := &adminClient{t: t, base: base, token: token, http: &http.Client{Timeout: 15 * time.Second}, seen: make(map[string]map[int]bool)}
	resp, err := c.http.Get(base + "/v1/openapi.json")
	if err != nil {
		t.Fatalf("GET /v1/openapi.json: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json (no token): %d %s", resp.StatusCode, raw)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("openapi.json: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.json does not validate: %v", verrs)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	c.doc = &adminDoc{validator: v, mux: http.NewServeMux(), ops: make(map[string]bool)}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().KeysFromOldest() {
			pattern := strings.ToUpper(method) + " " + path
			c.doc.ops[pattern] = true
			c.doc.mux.HandleFunc(pattern, func(http.ResponseWriter, *http.Request) {})
		}
	}
	return c
}

// adminResponse is an answer with its body read.
type adminResponse struct {
	*http.Response
	Body []byte
}

// JSON decodes the body into v.
func (r adminResponse) JSON(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, r.Body)
	}
}

// call sends a request with the admin token (unless headers set
// Authorization, "" to send none) and a body (a string is sent as is,
// anything else as JSON; nil for none).
func (c *adminClient) call(method, path string, body any, headers map[string]string) adminResponse {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(raw))
	if err != nil {
		c.t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	c.check(req, resp, out)
	return adminResponse{Response: resp, Body: out}
}

// check validates an answer against the document and records its status.
func (c *adminClient) check(req *http.Request, resp *http.Response, body []byte) {
	c.t.Helper()
	_, pattern := c.doc.mux.Handler(req)
	if pattern == "" || !c.doc.ops[pattern] {
		return // a path or method the API does not serve
	}
	c.mu.Lock()
	if c.seen[pattern] == nil {
		c.seen[pattern] = make(map[int]bool)
	}
	c.seen[pattern][resp.StatusCode] = true
	c.mu.Unlock()
	copyResp := *resp
	copyResp.Body = io.NopCloser(bytes.NewReader(body))
	c.doc.mu.Lock()
	ok, errs := c.doc.validator.ValidateHttpResponse(req, &copyResp)
	c.doc.mu.Unlock()
	if !ok {
		for _, e := range errs {
			c.t.Errorf("%s %s → %d does not match openapi.json: %s %s", req.Method, req.URL.Path, resp.StatusCode, e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				c.t.Errorf("  %s: %s", se.FieldPath, se.Reason)
			}
		}
		c.t.Logf("body: %s", body)
	}
}

// coverage fails the test for each operation of the document that was
// never answered with a success and with an error.
func (c *adminClient) coverage() {
	c.t.Helper()
	for op := range c.doc.ops {
		ok, failed := false, false
		for s := range c.seen[op] {
			ok = ok || s < 300
			failed = failed || s >= 400
		}
		if !ok || (!failed && op != "GET /v1/openapi.json") {
			c.t.Errorf("%s was not exercised with both a success and an error (statuses seen: %v)", op, keysOf(c.seen[op]))
		}
	}
}

func keysOf(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// expectError checks an envelope answer: status, code, message and,
// when field is not "", details.field.
func expectError(t *testing.T, r adminResponse, status int, field string) envelope {
	t.Helper()
	env := assertEnvelope(t, r.Response, r.Body, status)
	if field != "" {
		if got, _ := env.Error.Details["field"].(string); got != field {
			t.Errorf("details.field = %q, want %q (message %q)", got, field, env.Error.Message)
		}
	}
	return env
}

// expectStatus fails unless the answer has the status.
func expectStatus(t *testing.T, r adminResponse, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: %d, want %d: %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.Body)
	}
}

// apiOrg and apiKey are the parts of the answers the tests read.
type apiOrg struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Plan      string  `json:"plan_tier"`
	PerMinute *int64  `json:"rate_limit_per_minute"`
	PerDay    *int64  `json:"rate_limit_per_day"`
	Burst     *int64  `json:"burst"`
	Disabled  *string `json:"disabled_at"`
}

type apiKey struct {
	ID         string  `json:"id"`
	OrgID      string  `json:"organization_id"`
	Key        string  `json:"key"`
	Prefix     string  `json:"prefix"`
	Status     string  `json:"status"`
	Expires    *string `json:"expires_at"`
	ReplacedBy *string `json:"replaced_by"`
	Replaces   *apiKey `json:"replaces"`
}

type apiPage[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// createOrg creates an organization through the API.
func (c *adminClient) createOrg(name, plan string) apiOrg {
	c.t.Helper()
	r := c.call("POST", "/v1/orgs", map[string]any{"name": name, "plan": plan}, nil)
	expectStatus(c.t, r, http.StatusCreated)
	var o apiOrg
	r.JSON(c.t, &o)
	return o
}

// createKey creates a key through the API.
func (c *adminClient) createKey(orgID, name string) apiKey {
	c.t.Helper()
	r := c.call("POST", "/v1/orgs/"+orgID+"/keys", map[string]any{"name": name}, nil)
	expectStatus(c.t, r, http.StatusCreated)
	var k apiKey
	r.JSON(c.t, &k)
	return k
}

// gatewayStatus sends GET url with key and returns the status.
func gatewayStatus(t *testing.T, url, key string) int {
	t.Helper()
	return getWithKey(t, httpClient(), url, key).status
}

// waitGatewayStatus polls url until it answers want for key, and returns
// how long it took; it fails the test after timeout.
func waitGatewayStatus(t *testing.T, timeout time.Duration, url, key string, want int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := gatewayStatus(t, url, key)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s still answers %d after %s, want %d", url, got, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// artifactPath is where a test saves a file for people to look at:
// $TEST_ARTIFACTS_DIR, else the OS's temporary directory.
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("TEST_ARTIFACTS_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + "/" + name
}
