package caddyusage

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
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
	app := new(App)
	d.Next() // option name
	if d.NextArg() {
		return nil, d.Errf("tenant_usage: unexpected argument %q; settings go in a block", d.Val())
	}
	for d.NextBlock(0) {
		switch sub := d.Val(); sub {
		case "node_id":
			v, err := optionalArg(d)
			if err != nil {
				return nil, err
			}
			app.NodeID = v
		case "buffer":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return nil, d.Errf("tenant_usage: buffer: expected one number of events")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > maxBuffer {
				return nil, d.Errf("tenant_usage: buffer: expected a number of events from 1 to %d, got %q", maxBuffer, args[0])
			}
			app.Buffer = n
		case "spool_dir":
			v, err := optionalArg(d)
			if err != nil {
				return nil, err
			}
			app.SpoolDir = v
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
			k, err := parseKafka(d)
			if err != nil {
				return nil, err
			}
			app.Kafka = k
		case "postgres":
			p, err := parsePostgres(d)
			if err != nil {
				return nil, err
			}
			app.Postgres = p
		default:
			return nil, d.Errf("tenant_usage: unknown subdirective %q (expected node_id, buffer, spool_dir, spool_size, kafka or postgres)", sub)
		}
	}
	return httpcaddyfile.App{Name: AppID, Value: caddyconfig.JSON(app, nil)}, nil
}

func parseKafka(d *caddyfile.Dispenser) (*KafkaConfig, error) {
	k := new(KafkaConfig)
	if d.NextArg() {
		return nil, d.Errf("tenant_usage: kafka: settings go in a block")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch sub := d.Val(); sub {
		case "brokers":
			k.Brokers = strings.Join(d.RemainingArgs(), ",")
		case "topic":
			args := d.RemainingArgs()
			if len(args) != 1 || !validTopic(args[0]) {
				return nil, d.Errf("tenant_usage: kafka topic: expected one topic name of up to 249 characters of [A-Za-z0-9._-]")
			}
			k.Topic = args[0]
		case "delivery_timeout":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return nil, d.Errf("tenant_usage: kafka delivery_timeout: expected one duration such as 10s")
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return nil, d.Errf("tenant_usage: kafka delivery_timeout: expected a positive duration such as 10s, got %q", args[0])
			}
			k.DeliveryTimeout = caddy.Duration(dur)
		case "tls":
			args := d.RemainingArgs()
			k.TLS = true
			if len(args) == 1 {
				v, err := strconv.ParseBool(args[0])
				if err != nil {
					return nil, d.Errf("tenant_usage: kafka tls: expected true or false, got %q", args[0])
				}
				k.TLS = v
			} else if len(args) > 1 {
				return nil, d.Errf("tenant_usage: kafka tls: expected at most one argument")
			}
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
			return nil, d.Errf("tenant_usage: kafka: unknown subdirective %q (expected brokers, topic, delivery_timeout, tls or sasl)", sub)
		}
	}
	return k, nil
}

func parsePostgres(d *caddyfile.Dispenser) (*PostgresConfig, error) {
	p := new(PostgresConfig)
	if d.NextArg() {
		return nil, d.Errf("tenant_usage: postgres: settings go in a block")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch sub := d.Val(); sub {
		case "database_url":
			p.DatabaseURLs = d.RemainingArgs()
		case "raw_retention":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return nil, d.Errf("tenant_usage: postgres raw_retention: expected one duration such as 7d")
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < 1e9*3600 {
				return nil, d.Errf("tenant_usage: postgres raw_retention: expected a duration of at least 1h such as 7d, got %q", args[0])
			}
			p.RawRetention = caddy.Duration(dur)
		default:
			return nil, d.Errf("tenant_usage: postgres: unknown subdirective %q (expected database_url or raw_retention)", sub)
		}
	}
	return p, nil
}

// optionalArg reads "<name> [<value>]" (an unset variable leaves none).
func optionalArg(d *caddyfile.Dispenser) (string, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) > 1 {
		return "", d.Errf("tenant_usage: %s: expected one value, got %d", name, len(args))
	}
	return strings.Join(args, ""), nil
}

func validTopic(t string) bool {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
