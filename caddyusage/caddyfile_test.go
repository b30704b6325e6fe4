package caddyusage

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func parseGlobal(t *testing.T, input string) (*App, error) {
	t.Helper()
	v, err := parseGlobalOption(caddyfile.NewTestDispenser(input), nil)
	if err != nil {
		return nil, err
	}
	app := new(App)
	if err := json.Unmarshal(v.(httpcaddyfile.App).Value, app); err != nil {
		t.Fatal(err)
	}
	return app, nil
}

func TestGlobalOptionKafkaBlock(t *testing.T) {
	app, err := parseGlobal(t, `tenant_usage {
		kafka {
			brokers 127.0.0.1:9092 127.0.0.1:9093
			topic usage.events
			delivery_timeout 30s
			compression zstd
			tls
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	k := app.Kafka
	if k == nil || k.Brokers != "127.0.0.1:9092,127.0.0.1:9093" || k.Topic != "usage.events" ||
		time.Duration(k.DeliveryTimeout) != 30*time.Second || k.Compression != "zstd" || !k.TLS {
		t.Fatalf("kafka block parsed as %+v", k)
	}
	if err := app.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestGlobalOptionRefusesBadKafkaSettings(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"compression brotli", "compression: expected one of snappy, lz4, zstd, gzip, none"},
		{"compression", "compression: expected one of"},
		{"compression lz4\n compression zstd", "compression"},
		{"topic bad/topic", "kafka topic"},
		{"sasl kerberos user pass", "mechanism must be"},
		{"linger 5ms", "linger"},
	} {
		_, err := parseGlobal(t, "tenant_usage {\n kafka {\n "+tc.block+"\n }\n}")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.block, err, tc.want)
		}
	}
}

func TestValidateRefusesUnknownCompression(t *testing.T) {
	app := &App{Kafka: &KafkaConfig{Brokers: "127.0.0.1:9092", Compression: "brotli"}}
	if err := app.Validate(); err == nil || !strings.Contains(err.Error(), "compression") {
		t.Errorf("Validate: %v, want an error naming compression", err)
	}
}
