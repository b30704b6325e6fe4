package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	g.waitForOneListener(t)
	// Connections kept alive to the old server are closed by its shutdown.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// waitForOneListener waits until the gateway's port has a single listening
// socket again. Caddy binds each config's listener with SO_REUSEPORT and
// answers /load once the old server has begun shutting down, which may be
// a moment before its socket is closed; a connection the kernel queues on
// that socket in the meantime is reset. Without /proc (not Linux) it
// returns at once.
func (g *gatewayProcess) waitForOneListener(t *testing.T) {
	t.Helper()
	port, err := strconv.ParseUint(strings.TrimPrefix(g.URL, "http://127.0.0.1:"), 10, 16)
	if err != nil {
		t.Fatalf("gateway URL %s: %v", g.URL, err)
	}
	local := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		listeners, readable := 0, false
		for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			data, err := os.ReadFile(table)
			if err != nil {
				continue
			}
			readable = true
			for _, line := range strings.Split(string(data), "\n")[1:] {
				fields := strings.Fields(line)
				// fields[1] is local_address (hex ip:port), fields[3] the state; 0A is LISTEN.
				if len(fields) > 3 && strings.HasSuffix(fields[1], local) && fields[3] == "0A" {
					listeners++
				}
			}
		}
		if !readable || listeners <= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d still has %d listening sockets 10 s after the reload", port, listeners)
		}
		time.Sleep(5 * time.Millisecond)
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
