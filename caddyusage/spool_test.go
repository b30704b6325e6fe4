package caddyusage

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantgate/tenantgate/internal/usagetest"
)

func TestSpoolAppendReadRemoveInOrder(t *testing.T) {
	dir := t.TempDir()
	m := newMetrics()
	sp, err := openSpool(dir, 1<<20, m)
	if err != nil {
		t.Fatal(err)
	}
	evs := usagetest.Events(300, "org_s", time.Now(), time.Minute)
	for i := 0; i < 3; i++ {
		if n, err := sp.append(pointers(evs[i*100 : (i+1)*100])); n != 100 || err != nil {
			t.Fatalf("append: %d, %v", n, err)
		}
	}
	if sp.records() != 300 {
		t.Fatalf("records = %d", sp.records())
	}
	// A second process cannot open the same spool.
	if _, err := openSpool(dir, 1<<20, newMetrics()); err == nil {
		t.Fatal("a second spool on the same directory opened")
	}
	var got int
	for {
		seg, ok := sp.oldest()
		if !ok {
			break
		}
		events, err := sp.read(seg)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.ID != evs[got].ID {
				t.Fatalf("event %d out of order", got)
			}
			got++
		}
		if err := sp.remove(seg); err != nil {
			t.Fatal(err)
		}
	}
	if got != 300 || sp.records() != 0 || sp.size() != 0 {
		t.Fatalf("replayed %d, left %d records / %d bytes", got, sp.records(), sp.size())
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
}

// A crash leaves a torn record at a segment's end: on the next start the
// records before it are replayed, the tail is skipped and counted, and the
// spool goes on working.
func TestSpoolCorruptTailIsSkippedAndCounted(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	evs := usagetest.Events(10, "org_c", time.Now(), time.Minute)
	if _, err := sp.append(pointers(evs)); err != nil {
		t.Fatal(err)
	}
	path := sp.activeSg.path
	_ = sp.close()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, '{', '"'}) // torn record
	_ = f.Close()
	// Flip a byte of the 8th record's payload in a copy: a CRC mismatch.
	raw, _ := os.ReadFile(path)
	bad := append([]byte(nil), raw...)
	bad[len(raw)/10*8] ^= 0xff
	if err := os.WriteFile(filepath.Join(dir, "spool-00000000000000000099.seg"), bad, 0o600); err != nil {
		t.Fatal(err)
	}

	m := newMetrics()
	sp, err = openSpool(dir, 1<<20, m)
	if err != nil {
		t.Fatalf("reopening a spool with corrupt tails: %v", err)
	}
	defer sp.close()
	if c := testutil.ToFloat64(m.corrupt); c != 2 {
		t.Errorf("corrupt records counted: %v, want 2 (one per damaged segment)", c)
	}
	if n := sp.records(); n < 10 || n >= 20 {
		t.Errorf("records after reopening: %d, want the 10 intact ones and part of the damaged copy", n)
	}
	seg, _ := sp.oldest()
	events, err := sp.read(seg)
	if err != nil || len(events) != 10 {
		t.Fatalf("first segment: %d events, %v", len(events), err)
	}
	if n, err := sp.append(pointers(evs[:1])); n != 1 || err != nil {
		t.Fatalf("append after recovery: %d, %v", n, err)
	}
}

func TestSpoolIsBounded(t *testing.T) {
	sp, err := openSpool(t.TempDir(), minSegmentSize, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	evs := pointers(usagetest.Events(1000, "org_b", time.Now(), time.Minute))
	n, err := sp.append(evs)
	if !errors.Is(err, errSpoolFull) || n == 0 || n == len(evs) {
		t.Fatalf("append past the bound: wrote %d of %d, err %v", n, len(evs), err)
	}
	if sp.size() > minSegmentSize {
		t.Fatalf("spool holds %d bytes, bound %d", sp.size(), minSegmentSize)
	}
}

// TestValidatingNeverTakesARunningGatewaysSpool: `caddy validate` (or a
// config that fails to load) provisions the app but never starts it, so it
// must not lock, replay or change the spool a running gateway holds.
func TestValidatingNeverTakesARunningGatewaysSpool(t *testing.T) {
	dir := t.TempDir()
	running, err := openSpool(dir, 1<<20, newMetrics()) // the running gateway's
	if err != nil {
		t.Fatal(err)
	}
	defer running.close()
	cfg := []byte(`{"admin":{"disabled":true},"apps":{"tenant_usage":{"spool_dir":"` + dir + `"}}}`)
	if err := caddy.Validate(mustConfig(t, cfg)); err != nil {
		t.Fatalf("validating a config whose spool a running gateway holds: %v", err)
	}
	// Starting it for real does need the spool, and says whose it is.
	if err := caddy.Load(cfg, true); err == nil {
		_ = caddy.Stop()
		t.Fatal("a second gateway started on a spool that is in use")
	} else if !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("load error %v, want the spool in use", err)
	}
}

func mustConfig(t *testing.T, raw []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
