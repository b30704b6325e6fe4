package e2e

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// burst sends one request to each URL, all at once, and returns the
// responses.
func burst(t *testing.T, urls []string, key string) []keyedResponse {
	t.Helper()
	// Its own connections, closed afterwards so the gateway can stop at once.
	tr := &http.Transport{MaxIdleConnsPerHost: len(urls)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	out := make([]keyedResponse, len(urls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = getWithKey(t, client, u, key)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// repeat returns url n times.
func repeat(url string, n int) []string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = url
	}
	return urls
}

// countStatus counts responses by status code.
func countStatus(rs []keyedResponse) map[int]int {
	m := map[int]int{}
	for _, r := range rs {
		m[r.status]++
	}
	return m
}

// firstWithStatus returns the first response with status.
func firstWithStatus(t *testing.T, rs []keyedResponse, status int) keyedResponse {
	t.Helper()
	for _, r := range rs {
		if r.status == status {
			return r
		}
	}
	t.Fatalf("no %d among the responses (%v)", status, countStatus(rs))
	return keyedResponse{}
}

// uniqueOrg is an organization ID of this test run's own, so runs (and
// tests sharing Redis) never collide.
func uniqueOrg() string { return testenv.UniqueName("org_e2e_") }

// Syntax of the IETF fields (draft-ietf-httpapi-ratelimit-headers-10,
// sections 3 and 4)
// as tenant_ratelimit emits them.
var (
	policyField    = regexp.MustCompile(`^"minute";q=\d+;w=60, "day";q=\d+;w=86400$`)
	rateLimitField = regexp.MustCompile(`^"minute";r=(\d+)(;t=\d+)?, "day";r=(\d+);t=(\d+)$`)
)

// check429 verifies what a client is promised with a 429: the error
// envelope with limit_type, daily_used, minute_used, reset_at and
// retry_after details, a Retry-After that matches them, and the rate-limit
// headers; it returns the details.
func check429(t *testing.T, r keyedResponse, burst string) map[string]any {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", r.status)
	}
	var env envelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("429 body is not the envelope: %v: %s", err, r.body)
	}
	if env.Error.Code != 429 || env.RequestID == "" || env.Error.Details == nil {
		t.Fatalf("envelope %s", r.body)
	}
	d := env.Error.Details
	if lt := d["limit_type"]; lt != "minute" && lt != "day" {
		t.Errorf("details.limit_type = %v", lt)
	}
	for _, k := range []string{"daily_used", "minute_used", "retry_after"} {
		if _, ok := d[k].(float64); !ok {
			t.Errorf("details.%s = %v, want a number", k, d[k])
		}
	}
	if _, err := time.Parse(time.RFC3339, asString(d["reset_at"])); err != nil {
		t.Errorf("details.reset_at %v: %v", d["reset_at"], err)
	}
	h := r.header
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want whole seconds >= 1", h.Get("Retry-After"))
	} else if float64(ra) != d["retry_after"] {
		t.Errorf("Retry-After %d != details.retry_after %v", ra, d["retry_after"])
	}
	if d["limit_type"] == "minute" && h.Get("X-RateLimit-Remaining-Minute") != "0" {
		t.Errorf("X-RateLimit-Remaining-Minute = %q, want 0", h.Get("X-RateLimit-Remaining-Minute"))
	}
	if burst != "" && h.Get("X-RateLimit-Burst") != burst {
		t.Errorf("X-RateLimit-Burst = %q, want %s", h.Get("X-RateLimit-Burst"), burst)
	}
	if _, err := time.Parse(time.RFC3339, h.Get("X-RateLimit-Reset-Minute")); err != nil {
		t.Errorf("X-RateLimit-Reset-Minute %q: %v", h.Get("X-RateLimit-Reset-Minute"), err)
	}
	checkResetDay(t, r)
	if !policyField.MatchString(h.Get("RateLimit-Policy")) {
		t.Errorf("RateLimit-Policy %q does not match %s", h.Get("RateLimit-Policy"), policyField)
	}
	if !rateLimitField.MatchString(h.Get("RateLimit")) {
		t.Errorf("RateLimit %q does not match %s", h.Get("RateLimit"), rateLimitField)
	}
	return d
}

// checkResetDay: X-RateLimit-Reset-Day is the 00:00 UTC after the response.
func checkResetDay(t *testing.T, r keyedResponse) {
	t.Helper()
	date, err := http.ParseTime(r.header.Get("Date"))
	if err != nil {
		t.Fatalf("Date header: %v", err)
	}
	got, err := time.Parse(time.RFC3339, r.header.Get("X-RateLimit-Reset-Day"))
	if err != nil {
		t.Fatalf("X-RateLimit-Reset-Day %q: %v", r.header.Get("X-RateLimit-Reset-Day"), err)
	}
	// Date has whole seconds: the decision may be up to a second later.
	ok := false
	for _, at := range []time.Time{date, date.Add(time.Second)} {
		at = at.UTC()
		if got.Equal(time.Date(at.Year(), at.Month(), at.Day()+1, 0, 0, 0, 0, time.UTC)) {
			ok = true
		}
	}
	if !ok {
		t.Errorf("X-RateLimit-Reset-Day %s is not the next 00:00 UTC after %s", got, date)
	}
}

func asString(v any) string { s, _ := v.(string); return s }

// httpClient is a plain client with a timeout.
func httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }
