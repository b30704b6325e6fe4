package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// chromium returns the path of Debian's Chromium (.ci/run installs it);
// without it the test skips, and fails under CI=true.
func chromium(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "chromium", "chromium-browser")
}

// TestAdminDashboardInBrowser drives the dashboard in headless Chromium:
// enter the token, see the organization with its quota, open it and see a
// chart of its requests, revoke a key through the page; the gateway then
// refuses the key. A screenshot is saved as an artifact.
func TestAdminDashboardInBrowser(t *testing.T) {
	exe := chromium(t)
	dsn := testenv.MigratedDatabase(t)
	ports := startAdminGateway(t, dsn)
	adminPort, gatewayURL := ports.backend, ports.gatewayURL()
	base := "http://127.0.0.1:" + adminPort
	c := newAdminClient(t, base, adminToken)

	// An organization whose small minute limit turns part of a burst into
	// 429s, so the chart has two outcomes.
	r := c.call("POST", "/v1/orgs", map[string]any{"name": "Dashboard Co", "plan": "premium", "rate_limit_per_minute": 8, "burst": 0}, nil)
	expectStatus(t, r, http.StatusCreated)
	var org apiOrg
	r.JSON(t, &org)
	other := c.createOrg("Quiet Ltd", "basic")
	web, batch := c.createKey(org.ID, "web"), c.createKey(org.ID, "batch")
	c.createKey(other.ID, "unused")
	for i := 0; i < 6; i++ {
		gatewayStatus(t, gatewayURL+"/api/users", web.Key)
	}
	for i := 0; i < 6; i++ {
		gatewayStatus(t, gatewayURL+"/api/orders", batch.Key)
	}
	waitUsage(t, c, org.ID, "?granularity=minute", 12)

	ctx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 1500),
	)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	orgRow := fmt.Sprintf(`#orgs tr[data-org-id="%s"]`, org.ID)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	pollJS := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(10*time.Second))
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return v
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(css(`#token`)),
		chromedp.SendKeys(css(`#token`), adminToken),
		chromedp.Click(css(`#save-token`)),
		chromedp.WaitVisible(css(orgRow)),
		// The quota column fills in once the live limits arrive.
		pollJS(fmt.Sprintf(`document.querySelector('%s .quota').textContent.includes('/')`, orgRow)),
		chromedp.Click(css(orgRow)),
		chromedp.WaitVisible(css(`#chart-requests canvas`)),
		pollJS(`document.querySelector('#chart-requests').dataset.totalRequests === '12'`),
		chromedp.WaitVisible(css(fmt.Sprintf(`#keys tr[data-key-id="%s"] button.revoke`, web.ID))),
		chromedp.WaitVisible(css(fmt.Sprintf(`#top-keys tr[data-key-id="%s"]`, web.ID))),
	)
	if err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	orgText, quota := text(orgRow), text(orgRow+` .quota`)
	total, err := chromedp.Run(ctx, chromedp.AttributeValue(css(`#chart-requests`), "data-total-requests"))
	if err != nil {
		t.Fatal(err)
	}
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('tenantgate-admin-token')`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(orgText, "Dashboard Co") || !strings.Contains(orgText, "premium") || !strings.Contains(orgText, "active") {
		t.Errorf("organization row %q", orgText)
	}
	// 8 of the 12 requests were admitted (8/min, no burst): the quota
	// column shows what the limiter counted today.
	if !strings.Contains(quota, "8 / 100,000") {
		t.Errorf("quota column %q, want 8 / 100,000", quota)
	}
	if total.Value != "12" {
		t.Errorf("the requests chart shows %q requests, want 12", total.Value)
	}
	if strings.Contains(href, adminToken) || stored != adminToken {
		t.Errorf("token: in URL %q; in sessionStorage %q", href, stored)
	}

	// Revoke through the page (two clicks: the button asks to confirm).
	revoke := fmt.Sprintf(`#keys tr[data-key-id="%s"] button.revoke`, web.ID)
	err = chromedp.Do(ctx,
		chromedp.Click(css(revoke)),
		chromedp.WaitVisible(css(revoke+`.confirm`)),
		chromedp.Click(css(revoke)),
		chromedp.WaitVisible(css(fmt.Sprintf(`#keys tr[data-key-id="%s"][data-status="revoked"]`, web.ID))),
	)
	if err != nil {
		t.Fatalf("revoking through the dashboard: %v", err)
	}
	if keysText := text(`#keys tbody`); !strings.Contains(keysText, "revoked") {
		t.Errorf("keys table after revoking: %q", keysText)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := artifactPath(t, "tenantgate-dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot: %s", path)

	took := waitGatewayStatus(t, 2*time.Second, gatewayURL+"/api/users", web.Key, http.StatusForbidden)
	t.Logf("the gateway refused the key revoked in the dashboard within %s", took)
	if code := gatewayStatus(t, gatewayURL+"/api/orders", batch.Key); code != http.StatusOK && code != http.StatusTooManyRequests {
		t.Errorf("the other key: %d, want it untouched", code)
	}
	var k apiKey
	c.call("GET", "/v1/keys/"+web.ID, nil, nil).JSON(t, &k)
	if k.Status != "revoked" {
		t.Errorf("key status %q after revoking in the dashboard", k.Status)
	}
}
