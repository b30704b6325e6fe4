// Package caddyusage streams one usage event per authenticated request:
// the tenant_usage handler (http.handlers.tenant_usage) records each request
// and hands its event, without blocking, to the tenant_usage app — one
// pipeline per process, kept across reloads — which delivers it to Kafka,
// to PostgreSQL or to an in-process memory store, with a disk spool behind
// for whatever the sink cannot take. It also provides `caddy tenant usage`:
// the Kafka consumer that fills the usage store, and the report.
//
// The package reads as its concepts: app.go (the tenant_usage app),
// handler.go (the handler, event IDs and service labels), pipeline.go (the
// buffer, batching and the spool's replay), the sinks kafka.go, postgres.go
// and memory.go, spool.go (the disk spool), report.go (reading and
// rendering usage reports), consumer.go (the Kafka consumer), command.go
// (the CLI), metrics.go and caddyfile.go.
package caddyusage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/usagestore"
)

func init() {
	caddy.RegisterModule(App{})
}

// appID is the tenant_usage app's module ID.
const appID = "tenant_usage"

// App defaults.
const (
	defaultBuffer    = 10_000
	defaultSpoolSize = 256 << 20
	maxBuffer        = 10_000_000
)

// pipelinePool holds the process's one pipeline, shared by every config
// (so a reload loses nothing) and stopped gracefully when the last config
// using it goes away.
var pipelinePool = caddy.NewUsagePool()

const pipelineKey = "pipeline"

// App configures the process's usage pipeline (Caddyfile: the tenant_usage
// global option). Its sink is Kafka when kafka.brokers resolves to a
// non-empty list, else PostgreSQL when postgres.database_url resolves to a
// non-empty URL, else the in-process memory store.
type App struct {
	// NodeID names this gateway in the events' source
	// (tenantgate://<node_id>). Default: the host name.
	NodeID string `json:"node_id,omitempty"`

	// Buffer is the number of events held in memory between the requests
	// and the sink; beyond it, events go to the disk spool. It is fixed when
	// the process starts (a reload does not resize it). Default: 10000.
	Buffer int `json:"buffer,omitempty"`

	// SpoolDir is the disk spool's directory; one gateway process per
	// directory. Fixed when the process starts. Default:
	// <Caddy data dir>/tenantgate/spool.
	SpoolDir string `json:"spool_dir,omitempty"`

	// SpoolSize bounds the disk spool, in bytes; beyond it events are
	// dropped and counted (tenantgate_usage_events_dropped_total
	// {reason="spool_full"}). Default: 268435456 (256 MiB).
	SpoolSize int64 `json:"spool_size,omitempty"`

	// Kafka is the Kafka sink: the events are produced to a topic, from
	// which `caddy tenant usage ingest` fills the usage database. It is the
	// sink when its brokers resolve to a non-empty list. Default: none (no
	// Kafka sink).
	Kafka *KafkaConfig `json:"kafka,omitempty"`

	// Postgres is the postgres sink: the gateway ingests the events into
	// the usage database itself. It is the sink when there is no Kafka
	// sink and one of its database_urls resolves to a non-empty URL.
	// Default: none (without either sink, the events go to the in-process
	// memory store, which keeps the last 24 hours).
	Postgres *PostgresConfig `json:"postgres,omitempty"`

	pipeline *pipeline
	sinkKey  string
	mkSink   func() (sink, error)
	logger   *zap.Logger
	// Settings applied to the shared pipeline when this config starts.
	node      string
	spoolSize int64
}

// KafkaConfig is the Kafka sink: an idempotent producer (acks=all) to one
// topic, keyed by organization.
type KafkaConfig struct {
	// Brokers are the Kafka brokers, host:port separated by commas or
	// spaces. Placeholders such as {env.KAFKA_BROKERS} are expanded when
	// the config is loaded; a list that expands to nothing means no Kafka
	// sink. Default: none (no Kafka sink).
	Brokers string `json:"brokers,omitempty"`

	// Topic receives the events: up to 249 characters of letters, digits,
	// ".", "_", "-"; a placeholder is expanded. Default: tenantgate.usage.v1.
	Topic string `json:"topic,omitempty"`

	// DeliveryTimeout is how long a record may wait for the broker's
	// acknowledgement before it goes to the disk spool. Default: 10s.
	DeliveryTimeout caddy.Duration `json:"delivery_timeout,omitempty"`

	// Compression is the codec of produced batches: snappy, lz4, zstd,
	// gzip or none. snappy costs the gateway under a microsecond of CPU
	// per event, zstd and gzip several; compressed JSON events take the
	// brokers' network and disk several times less room. Default: snappy.
	Compression string `json:"compression,omitempty"`

	// TLS connects to the brokers with TLS 1.2 or later, verified against
	// the system's root certificates. Default: false.
	TLS bool `json:"tls,omitempty"`

	// SASL authenticates to the brokers. Default: none (no
	// authentication).
	SASL *SASLConfig `json:"sasl,omitempty"`
}

// SASLConfig is Kafka SASL authentication.
type SASLConfig struct {
	// Mechanism is the SASL mechanism: plain, scram-sha-256 or
	// scram-sha-512. Default: none (required).
	Mechanism string `json:"mechanism"`

	// Username is the SASL user name. Placeholders such as
	// {env.KAFKA_SASL_USERNAME} are expanded when the config is loaded.
	// Default: none (required).
	Username string `json:"username"`

	// Password is the SASL password. Placeholders such as
	// {env.KAFKA_SASL_PASSWORD} are expanded when the config is loaded,
	// so the password need not be written into the config. Default: none
	// (required).
	Password string `json:"password"`
}

// PostgresConfig is the postgres sink: direct ingestion into the usage
// store (migrated by `caddy tenant migrate`).
type PostgresConfig struct {
	// DatabaseURLs are PostgreSQL connection strings (URL or key=value
	// form), tried in order: the first that is non-empty once its
	// placeholders ({env.USAGE_DATABASE_URL}, {env.DATABASE_URL}) are
	// expanded is used. Default: none (no postgres sink).
	DatabaseURLs []string `json:"database_urls,omitempty"`

	// RawRetention: raw events older than this are dropped, and events
	// arriving older than this are dead-lettered. Default: 168h (7 days).
	RawRetention caddy.Duration `json:"raw_retention,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  appID,
		New: func() caddy.Module { return new(App) },
	}
}

// Provision validates the config, attaches to the process's pipeline and
// registers its metrics and health check. The sink is switched in Start,
// once the whole config is known to load.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := a.Validate(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	node := repl.ReplaceKnown(a.NodeID, "")
	if node == "" {
		node, _ = os.Hostname()
	}
	if node == "" {
		node = "tenantgate"
	}
	spoolDir := repl.ReplaceKnown(a.SpoolDir, "")
	if spoolDir == "" {
		spoolDir = filepath.Join(caddy.AppDataDir(), "tenantgate", "spool")
	}
	buffer := a.Buffer
	if buffer == 0 {
		buffer = defaultBuffer
	}
	spoolSize := a.SpoolSize
	if spoolSize == 0 {
		spoolSize = defaultSpoolSize
	}
	v, loaded, err := pipelinePool.LoadOrNew(pipelineKey, func() (caddy.Destructor, error) {
		return preparePipeline(buffer, spoolDir, spoolSize, newMetrics(), a.logger), nil
	})
	if err != nil {
		return fmt.Errorf("tenant_usage: %w", err)
	}
	a.pipeline = v.(*pipeline)
	if loaded && (a.pipeline.spoolDir != spoolDir || cap(a.pipeline.events) != buffer) {
		a.logger.Warn("tenant_usage: buffer and spool_dir take effect when the process restarts; keeping the running pipeline's",
			zap.Int("buffer", cap(a.pipeline.events)), zap.String("spool_dir", a.pipeline.spoolDir))
	}
	// Applied in Start: a config that fails to load changes nothing.
	a.node, a.spoolSize = node, spoolSize
	if err := sharedmetrics.Register(ctx.GetMetricsRegistry(), a.pipeline.metrics.collectors()...); err != nil {
		return fmt.Errorf("tenant_usage: %w", err)
	}
	registry, err := tenant.RegistryFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_usage: %w", err)
	}
	registry.RegisterCheck("usage", a.pipeline.health)
	return a.prepareSink(repl, buffer)
}

// prepareSink resolves which sink the config asks for.
func (a *App) prepareSink(repl *caddy.Replacer, buffer int) error {
	m, logger := a.pipeline.metrics, a.logger
	if a.Kafka != nil {
		brokers := strings.FieldsFunc(repl.ReplaceKnown(a.Kafka.Brokers, ""), func(r rune) bool { return r == ',' || r == ' ' })
		if len(brokers) > 0 {
			k := kafkaSettings{
				brokers:         brokers,
				topic:           repl.ReplaceKnown(a.Kafka.Topic, ""),
				deliveryTimeout: time.Duration(a.Kafka.DeliveryTimeout),
				maxBuffered:     buffer,
				tls:             a.Kafka.TLS,
				compression:     a.Kafka.Compression,
			}
			if k.topic == "" {
				k.topic = defaultTopic
			}
			if k.deliveryTimeout == 0 {
				k.deliveryTimeout = defaultDeliveryTimeout
			}
			if s := a.Kafka.SASL; s != nil {
				k.saslMechanism, k.saslUser, k.saslPassword = s.Mechanism, repl.ReplaceKnown(s.Username, ""), repl.ReplaceKnown(s.Password, "")
				if _, err := saslMechanism(k.saslMechanism, "", ""); err != nil {
					return fmt.Errorf("tenant_usage: %w", err)
				}
			}
			a.sinkKey = k.key()
			a.mkSink = func() (sink, error) { return newKafkaSink(k, m, logger) }
			return nil
		}
	}
	if a.Postgres != nil {
		for _, raw := range a.Postgres.DatabaseURLs {
			dsn := repl.ReplaceKnown(raw, "")
			if dsn == "" {
				continue
			}
			retention := time.Duration(a.Postgres.RawRetention)
			a.sinkKey = fmt.Sprintf("postgres|%s|%s", dsn, retention)
			a.mkSink = func() (sink, error) { return newPostgresSink(dsn, retention, m, logger) }
			return nil
		}
	}
	a.sinkKey = "memory"
	a.mkSink = func() (sink, error) { return newMemoryStore(time.Now, m), nil }
	return nil
}

// Validate checks the configuration.
func (a *App) Validate() error {
	switch {
	case a.Buffer < 0 || a.Buffer > maxBuffer:
		return fmt.Errorf("tenant_usage: buffer must be from 1 to %d events, got %d", maxBuffer, a.Buffer)
	case a.SpoolSize < 0:
		return fmt.Errorf("tenant_usage: spool_size must be positive, got %d", a.SpoolSize)
	case a.SpoolSize > 0 && a.SpoolSize < minSegmentSize:
		return fmt.Errorf("tenant_usage: spool_size must be at least %d bytes, got %d", minSegmentSize, a.SpoolSize)
	case a.Kafka != nil && a.Kafka.DeliveryTimeout < 0:
		return errors.New("tenant_usage: kafka delivery_timeout must be positive")
	case a.Kafka != nil && !validCompression(a.Kafka.Compression):
		return fmt.Errorf("tenant_usage: kafka compression must be one of %s, got %q", strings.Join(compressionCodecs, ", "), a.Kafka.Compression)
	case a.Postgres != nil && a.Postgres.RawRetention < 0:
		return errors.New("tenant_usage: postgres raw_retention must be positive")
	}
	return nil
}

// Start switches the pipeline to this config's sink (a no-op when it is
// the sink already in use).
func (a *App) Start() error {
	a.pipeline.logger.Store(a.logger)
	a.pipeline.node.Store(&a.node)
	err := a.pipeline.use(a.sinkKey, a.mkSink)
	if err != nil {
		return fmt.Errorf("tenant_usage: %w", err)
	}
	a.pipeline.spool.setMax(a.spoolSize)
	a.logger.Info("usage events", zap.String("sink", a.pipeline.sink.Load().name()),
		zap.String("spool_dir", a.pipeline.spoolDir), zap.Int("buffer", cap(a.pipeline.events)))
	return nil
}

// Stop implements caddy.App. The pipeline outlives configs; Cleanup
// releases this config's use of it.
func (*App) Stop() error { return nil }

// Cleanup releases the pipeline; the last config to go stops it
// gracefully (buffer delivered, sink flushed, the rest spooled).
func (a *App) Cleanup() error {
	if a.pipeline != nil {
		_, err := pipelinePool.Delete(pipelineKey)
		return err
	}
	return nil
}

// Emit hands an event to the pipeline (never blocks). The handler uses it;
// so can other modules that account requests.
func (a *App) Emit(e *usagestore.Event) { a.pipeline.emit(e) }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
