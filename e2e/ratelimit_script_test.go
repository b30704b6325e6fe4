package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// TestRateLimitScriptAgainstDefaultCaddyfile runs scripts/test-ratelimit.sh
// against the repository's default Caddyfile, as the README says: with its
// defaults (in process, demo key), and with REDIS_ADDR set.
func TestRateLimitScriptAgainstDefaultCaddyfile(t *testing.T) {
	testenv.Tool(t, "curl")
	run := func(t *testing.T, key string, env ...string) string {
		demo := freePort(t)
		env = append(env, "DEMO_BACKEND_PORT="+demo, "API_SERVICE_URL=127.0.0.1:"+demo)
		g := startProcess(t, readDefaultCaddyfile(t), env...)
		args := []string{"../scripts/test-ratelimit.sh", g.URL + "/api/test"}
		if key != "" {
			args = append(args, key)
		}
		out, err := exec.Command("bash", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("test-ratelimit.sh: %v\n%s", err, out)
		}
		for _, want := range []string{"HTTP/1.1 429", `"limit_type":"minute"`, "X-Ratelimit-Remaining-Minute: 0", "PASS"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		return string(out)
	}
	t.Run("in process", func(t *testing.T) {
		out := run(t, "", "REDIS_ADDR=")
		if !strings.Contains(out, "X-Ratelimit-Limit-Minute: 1000") {
			t.Errorf("the demo key is not on plan premium:\n%s", out)
		}
	})
	t.Run("redis", func(t *testing.T) {
		org := uniqueOrg()
		rdb, addr := redisForTest(t, org)
		run(t, "sk_test_script", "REDIS_ADDR="+addr, "VALID_API_KEYS=sk_test_script:"+org+":basic")
		bucket, counter := rateLimitKeys(org)
		if n := rdb.Exists(context.Background(), bucket, counter).Val(); n != 2 {
			t.Fatalf("the default Caddyfile with REDIS_ADDR did not decide on Redis (%d of 2 keys)", n)
		}
	})
}

// TestRateLimitScriptVerdictRestsOnWhatItSaw: the script's verdict comes
// from the responses it got. A limiter whose bucket refills between the
// burst and any later request (as on a slow machine) answers 429 only
// within the burst: the script must show that 429 and pass. A server that
// never limits, or answers 5xx, fails it.
func TestRateLimitScriptVerdictRestsOnWhatItSaw(t *testing.T) {
	testenv.Tool(t, "curl")
	// serve answers request number n (from 1) with status(n).
	serve := func(status func(n int64) int) string {
		var count atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer sk_test_script" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			code := status(count.Add(1))
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-RateLimit-Limit-Minute", "20")
			if code == http.StatusTooManyRequests {
				w.Header().Set("X-RateLimit-Remaining-Minute", "0")
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"status":%d,"limit_type":"minute"}`, code)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/api/test"
	}
	run := func(url string, env ...string) (string, error) {
		cmd := exec.Command("bash", "../scripts/test-ratelimit.sh", url, "sk_test_script")
		cmd.Env = append(cmd.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// 429s only for requests 21-40, inside the first burst of 50; every
	// later request is admitted again.
	out, err := run(serve(func(n int64) int {
		if n > 20 && n <= 40 {
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}), "BATCH=50")
	if err != nil {
		t.Fatalf("the limit was enforced in the burst, and the script failed: %v\n%s", err, out)
	}
	for _, want := range []string{"HTTP/1.1 429", "X-Ratelimit-Remaining-Minute: 0", `{"status":429,"limit_type":"minute"}`, "20 x 429", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	if out, err := run(serve(func(int64) int { return http.StatusOK }), "MAX_REQUESTS=200"); err == nil || !strings.Contains(out, "FAIL: no 429") {
		t.Errorf("no limit at all: err %v, want a failure saying no 429:\n%s", err, out)
	}
	if out, err := run(serve(func(n int64) int {
		if n == 5 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	}), "MAX_REQUESTS=200"); err == nil || !strings.Contains(out, "neither 200 nor 429") {
		t.Errorf("a 502 in the burst: err %v, want a failure:\n%s", err, out)
	}
}
