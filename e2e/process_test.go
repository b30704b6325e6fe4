package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary holds the gateway built once per test binary for tests that need
// several gateway instances as separate processes.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
	if spoolDir.path != "" {
		_ = os.RemoveAll(spoolDir.path)
	}
	os.Exit(code)
}

// gatewayBinary builds ./cmd/caddy (once) and returns its path.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "tenantgate-e2e-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "caddy")
		cmd := exec.Command("go", "build", "-o", binary.path, "../cmd/caddy")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// freePort returns a TCP port that was free a moment ago on 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	return freePorts(t, 1)[0]
}

// freePorts returns n distinct TCP ports that were free a moment ago on
// 127.0.0.1: each is listened on (port 0: the kernel picks) until all are
// chosen, then released.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]string, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		defer ln.Close()
		_, ports[i], _ = net.SplitHostPort(ln.Addr().String())
	}
	return ports
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gatewayProcess is a built gateway running in its own process.
type gatewayProcess struct {
	URL       string // http://127.0.0.1:<GATEWAY_PORT>
	AdminAddr string // 127.0.0.1:<ADMIN_ADDR port>
	AdminAPI  string // http://127.0.0.1:<ADMIN_PORT>: tenant_admin's site in the default Caddyfile
	Logs      *syncBuffer
	cmd       *exec.Cmd
}

// startProcess runs the built gateway on caddyfile, which should listen on
// :{$GATEWAY_PORT} and either set `admin {$ADMIN_ADDR}` or leave the admin
// address to CADDY_ADMIN, as the default Caddyfile does; all are set to
// free ports, and so is ADMIN_PORT (the default Caddyfile's admin API site).
// env adds or overrides environment variables ("NAME=value"). The process
// is stopped when the test ends; its output is logged on failure.
func startProcess(t *testing.T, caddyfile string, env ...string) *gatewayProcess {
	t.Helper()
	bin := gatewayBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	port, adminPort, apiPort := ports[0], ports[1], ports[2]
	g := &gatewayProcess{
		URL:       "http://127.0.0.1:" + port,
		AdminAddr: "127.0.0.1:" + adminPort,
		AdminAPI:  "http://127.0.0.1:" + apiPort,
		Logs:      new(syncBuffer),
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GATEWAY_PORT="+port,
		"ADMIN_ADDR="+g.AdminAddr,
		"CADDY_ADMIN="+g.AdminAddr,
		"ADMIN_PORT="+apiPort,
		"HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = g.Logs, g.Logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gateway: %v", err)
	}
	g.cmd = cmd
	t.Cleanup(func() {
		g.Stop()
		if t.Failed() {
			t.Logf("gateway %s output:\n%s", g.URL, g.Logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + g.AdminAddr + "/config/")
		if err == nil {
			resp.Body.Close()
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
				c.Close()
				return g
			}
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("gateway did not start on %s:\n%s", g.URL, g.Logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Reload loads a new Caddyfile through the admin API, as `caddy reload` does.
func (g *gatewayProcess) Reload(t *testing.T, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+g.AdminAddr+"/load", strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate") // reload even if unchanged
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("reload: status %d: %s", resp.StatusCode, b.String())
	}
}

// Stop ends the process (SIGINT, then SIGKILL after 5 s).
func (g *gatewayProcess) Stop() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	_ = g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	g.cmd = nil
}
