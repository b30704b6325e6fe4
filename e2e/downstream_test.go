package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// downstreamGateway is a gateway in front of a file_server rooted at root,
// an `error` directive and the upstream backendAddr.
func downstreamGateway(port, root, backendAddr string) string {
	return `
:` + port + ` {
	route {
		tenant_auth {
			key ` + testKey + ` org_e2e premium
		}
		handle_path /files/* {
			file_server {
				root ` + root + `
			}
		}
		handle /gone {
			error "this API version was removed: use <v2> & retry" 410
		}
		handle /api/* {
			reverse_proxy ` + backendAddr + `
		}
		error "service not found" 404
	}
}
`
}

// TestDownstreamErrorsDoNotLeak: errors raised behind the gateway answer
// with the status text, except the Caddyfile's own `error` messages, and
// never reveal what the handler knew (here a file path).
func TestDownstreamErrorsDoNotLeak(t *testing.T) {
	// A file even root may not read: /proc/sys files of mode 0200 refuse
	// reading to everyone, so file_server answers 403 with an error that
	// names the full path.
	const root, unreadable = "/proc/sys/vm", "drop_caches"
	if _, err := os.Stat(root + "/" + unreadable); err != nil {
		t.Fatalf("this test needs Linux's %s/%s: %v", root, unreadable, err)
	}
	ports := newTestPorts(t)
	url := "http://127.0.0.1:" + ports.gateway
	tester := startGateway(t, ports, downstreamGateway(ports.gateway, root, "127.0.0.1:"+ports.backend))
	bearer := map[string]string{"Authorization": "Bearer " + testKey}

	t.Run("file_server 403 does not reveal the path", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, url+"/files/"+unreadable, bearer)
		env := assertEnvelope(t, resp, body, http.StatusForbidden)
		if env.Error.Message != "forbidden" {
			t.Errorf("message %q, want %q", env.Error.Message, "forbidden")
		}
		if strings.Contains(string(body), root) || strings.Contains(string(body), "permission denied") {
			t.Errorf("403 body reveals the cause: %s", body)
		}
	})

	t.Run("file_server 404 does not reveal the path", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, url+"/files/no-such-file", bearer)
		env := assertEnvelope(t, resp, body, http.StatusNotFound)
		if env.Error.Message != "not found" || strings.Contains(string(body), root) {
			t.Errorf("404 body %s", body)
		}
	})

	t.Run("the error directive's own message is shown as written", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, url+"/gone", bearer)
		env := assertEnvelope(t, resp, body, http.StatusGone)
		if want := "this API version was removed: use <v2> & retry"; env.Error.Message != want {
			t.Errorf("message %q, want %q", env.Error.Message, want)
		}
		resp, body = do(t, tester, http.MethodGet, url+"/nowhere", bearer)
		if env := assertEnvelope(t, resp, body, http.StatusNotFound); env.Error.Message != "service not found" {
			t.Errorf("unknown route: message %q", env.Error.Message)
		}
	})

	t.Run("401 message shows <key> unescaped", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, url+"/api/x", map[string]string{"Authorization": "Basic eDp5"})
		assertEnvelope(t, resp, body, http.StatusUnauthorized)
		if !strings.Contains(string(body), "'Bearer <key>'") {
			t.Errorf("401 body %s, want the message with <key> as written", body)
		}
	})
}

// TestOneRequestIDWhenTheBackendEchoesIt: backends commonly copy
// X-Request-ID into their answer; the client must still get one header.
func TestOneRequestIDWhenTheBackendEchoesIt(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-ID", r.Header.Get("X-Request-ID"))
		if r.URL.Query().Has("own") {
			w.Header().Add("X-Request-ID", "backend-made-this-one")
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(backend.Close)
	ports := newTestPorts(t)
	url := "http://127.0.0.1:" + ports.gateway
	tester := startGateway(t, ports, downstreamGateway(ports.gateway, t.TempDir(), strings.TrimPrefix(backend.URL, "http://")))

	for _, c := range []struct{ name, query, sent string }{
		{"echo of the client's id", "", "client-rid-7"},
		{"echo of a generated id", "", ""},
		{"echo plus the backend's own", "?own", "client-rid-8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			headers := map[string]string{"Authorization": "Bearer " + testKey}
			if c.sent != "" {
				headers["X-Request-ID"] = c.sent
			}
			resp, body := do(t, tester, http.MethodGet, url+"/api/echo"+c.query, headers)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := resp.Header.Values("X-Request-ID")
			if len(got) != 1 {
				t.Fatalf("X-Request-ID = %q, want exactly one", got)
			}
			if c.sent != "" && got[0] != c.sent {
				t.Errorf("X-Request-ID = %q, want %q", got[0], c.sent)
			}
		})
	}
}
