package caddyratelimit

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	// go-redis logs each failed dial to stderr in its own format. The
	// limiter already logs an outage once (and its end); go-redis's lines
	// go to Caddy's log at DEBUG, in Caddy's format.
	redis.SetLogger(redisLogger{})
}

// redisLogger routes go-redis's internal log lines to Caddy's logger.
type redisLogger struct{}

// Printf implements go-redis's internal.Logging.
func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := caddy.Log().Named("redis").Check(zapcore.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
