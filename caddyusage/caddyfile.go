package caddyusage

import (
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("tenant_usage", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("tenant_usage", parseHandler)
	// Before every auth directive (tenant_auth orders itself after
	// forward_auth), so the handler sees each request's final status and
	// bytes, errors rendered by tenant_auth included.
	httpcaddyfile.RegisterDirectiveOrder("tenant_usage", httpcaddyfile.Before, "basic_auth")
}

// parseHandler sets up the handler. Syntax:
//
//	tenant_usage [<service>]
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	u := new(Handler)
	h.Next() // directive name
	args := h.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		u.Service = args[0]
		if !strings.Contains(u.Service, "{") && !cleanLabel(u.Service) {
			return nil, h.Errf("tenant_usage: service label %q: expected up to %d characters of [A-Za-z0-9._-] or a placeholder", u.Service, maxServiceLen)
		}
	default:
		return nil, h.Errf("tenant_usage: expected at most one argument (the service label), got %d", len(args))
	}
	if h.NextBlock(0) {
		return nil, h.Errf("tenant_usage: the handler takes no block; configure the pipeline in the global tenant_usage option")
	}
	return u, nil
}

// parseGlobalOption sets up the app from the global option. Syntax:
//
//	tenant_usage {
//	    node_id    <id>
//	    buffer     <events>
//	    spool_dir  <dir>
//	    spool_size <size>              # e.g. 256MiB
//	    kafka {
//	        brokers          [<host:port>[,<host:port>…]]
//	        topic            <topic>
//	        delivery_timeout <duration>
//	        compression      <snappy|lz4|zstd|gzip|none>
//	        tls              [true|false]
//	        sasl             <plain|scram-sha-256|scram-sha-512> <username> <password>
//	    }
//	    postgres {
//	        database_url  [<url> [<fallback url>…]]
//	        raw_retention <duration>
//	    }
//	}
//
// brokers and database_url may be empty (from an unset environment
// variable): then that sink is not used.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	const directive = "tenant_usage"
	app := new(App)
	d.Next() // option name
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return nil, err
	}
	once := caddyfileutil.NewOnce(directive)
	for d.NextBlock(0) {
		if err := once.Check(d); err != nil {
			return nil, err
		}
		var err error
		switch d.Val() {
		case "node_id":
			app.NodeID, err = caddyfileutil.OptionalValue(d, directive, "value")
		case "buffer":
			app.Buffer, err = caddyfileutil.Int(d, directive, "events", 1, maxBuffer)
		case "spool_dir":
			app.SpoolDir, err = caddyfileutil.OptionalValue(d, directive, "value")
		case "spool_size":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return nil, d.Errf("tenant_usage: spool_size: expected one size such as 256MiB")
			}
			n, err := humanize.ParseBytes(args[0])
			if err != nil || n < minSegmentSize || n > 1<<50 {
				return nil, d.Errf("tenant_usage: spool_size: expected a size of at least 64KiB such as 256MiB, got %q", args[0])
			}
			app.SpoolSize = int64(n)
		case "kafka":
			app.Kafka, err = parseKafka(d)
		case "postgres":
			app.Postgres, err = parsePostgres(d)
		default:
			return nil, caddyfileutil.Unknown(d, directive, "node_id", "buffer", "spool_dir", "spool_size", "kafka", "postgres")
		}
		if err != nil {
			return nil, err
		}
	}
	return httpcaddyfile.App{Name: appID, Value: caddyconfig.JSON(app, nil)}, nil
}

func parseKafka(d *caddyfile.Dispenser) (*KafkaConfig, error) {
	const directive = "tenant_usage: kafka"
	k := new(KafkaConfig)
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return nil, err
	}
	once := caddyfileutil.NewOnce(directive)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once.Check(d); err != nil {
			return nil, err
		}
		var err error
		switch d.Val() {
		case "brokers":
			k.Brokers = strings.Join(d.RemainingArgs(), ",")
		case "topic":
			args := d.RemainingArgs()
			if len(args) != 1 || !validTopic(args[0]) {
				return nil, d.Errf("tenant_usage: kafka topic: expected one topic name of up to 249 characters of [A-Za-z0-9._-]")
			}
			k.Topic = args[0]
		case "delivery_timeout":
			k.DeliveryTimeout, err = caddyfileutil.Duration(d, directive, "10s")
		case "compression":
			args := d.RemainingArgs()
			if len(args) != 1 || !validCompression(args[0]) {
				return nil, d.Errf("tenant_usage: kafka compression: expected one of %s", strings.Join(compressionCodecs, ", "))
			}
			k.Compression = args[0]
		case "tls":
			k.TLS, err = caddyfileutil.OptionalBool(d, directive)
		case "sasl":
			args := d.RemainingArgs()
			if len(args) != 3 {
				return nil, d.Errf("tenant_usage: kafka sasl: expected <mechanism> <username> <password>")
			}
			if _, err := saslMechanism(args[0], "", ""); err != nil {
				return nil, d.Errf("tenant_usage: %v", err)
			}
			k.SASL = &SASLConfig{Mechanism: args[0], Username: args[1], Password: args[2]}
		default:
			return nil, caddyfileutil.Unknown(d, directive, "brokers", "topic", "delivery_timeout", "compression", "tls", "sasl")
		}
		if err != nil {
			return nil, err
		}
	}
	return k, nil
}

func parsePostgres(d *caddyfile.Dispenser) (*PostgresConfig, error) {
	const directive = "tenant_usage: postgres"
	p := new(PostgresConfig)
	if err := caddyfileutil.NoInlineArgs(d, directive); err != nil {
		return nil, err
	}
	once := caddyfileutil.NewOnce(directive)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once.Check(d); err != nil {
			return nil, err
		}
		switch d.Val() {
		case "database_url":
			p.DatabaseURLs = d.RemainingArgs()
		case "raw_retention":
			dur, err := caddyfileutil.Duration(d, directive, "7d")
			if err != nil {
				return nil, err
			}
			if time.Duration(dur) < time.Hour {
				return nil, d.Errf("tenant_usage: postgres: raw_retention: expected a duration of at least 1h such as 7d, got %s", time.Duration(dur))
			}
			p.RawRetention = dur
		default:
			return nil, caddyfileutil.Unknown(d, directive, "database_url", "raw_retention")
		}
	}
	return p, nil
}

// validTopic reports whether t is a Kafka topic name: up to 249 characters
// of [A-Za-z0-9._-], not "." or "..".
func validTopic(t string) bool {
	return t != "" && len(t) <= 249 && t != "." && t != ".." && tenant.SafeChars(t)
}
