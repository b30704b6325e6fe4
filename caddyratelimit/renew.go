package caddyratelimit

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// renewingClient is a Redis client whose connection pool is replaced by a
// fresh one when an outage begins. Connections left half-open by a network
// partition would otherwise sit in the pool and each cost a probe its
// redis_timeout after the partition heals; a fresh pool only holds
// connections made since.
type renewingClient struct {
	opts *redis.UniversalOptions
	cur  atomic.Pointer[clientBox]
}

type clientBox struct{ redis.UniversalClient }

func newRenewingClient(opts *redis.UniversalOptions) *renewingClient {
	c := &renewingClient{opts: opts}
	c.cur.Store(&clientBox{redis.NewUniversalClient(opts)})
	return c
}

// current is the client in use.
func (c *renewingClient) current() redis.UniversalClient { return c.cur.Load().UniversalClient }

// renew swaps in a new pool and closes the old one; calls still running on
// it fail, as they were failing anyway.
func (c *renewingClient) renew() {
	old := c.cur.Swap(&clientBox{redis.NewUniversalClient(c.opts)})
	go old.Close()
}

// Close closes the client in use.
func (c *renewingClient) Close() error { return c.current().Close() }

// Ping checks that Redis answers.
func (c *renewingClient) Ping(ctx context.Context) error { return c.current().Ping(ctx).Err() }

// The redis.Scripter methods, on the client in use.

func (c *renewingClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.current().Eval(ctx, script, keys, args...)
}

func (c *renewingClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalSha(ctx, sha1, keys, args...)
}

func (c *renewingClient) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalRO(ctx, script, keys, args...)
}

func (c *renewingClient) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalShaRO(ctx, sha1, keys, args...)
}

func (c *renewingClient) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return c.current().ScriptExists(ctx, hashes...)
}

func (c *renewingClient) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return c.current().ScriptLoad(ctx, script)
}

var _ redis.Scripter = (*renewingClient)(nil)
