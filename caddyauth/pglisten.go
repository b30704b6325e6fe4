package caddyauth

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// notifyChannel is the channel the migrations' triggers notify on.
const notifyChannel = "tenantgate_keys"

// Reconnection backoff of the LISTEN connection, and how often an idle
// LISTEN connection is pinged so that a silently dead one is noticed.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
	listenPingEvery  = 10 * time.Second
)

// listenLoop keeps a LISTEN connection open for the store's lifetime. Each
// time it (re)connects it resynchronises the cache, since notifications
// sent while it was away are lost.
func (b *pgBackend) listenLoop() {
	defer b.wg.Done()
	backoff := listenMinBackoff
	first := true
	failures := 0 // since the last time the connection was up
	for b.ctx.Err() == nil {
		connected, err := b.listenOnce(&first)
		b.state.listening.Store(false)
		if b.ctx.Err() != nil {
			return
		}
		if connected {
			backoff, failures = listenMinBackoff, 0
		}
		// The first failure of a streak is a warning; the retries are not.
		if failures++; failures == 1 {
			b.logger().Warn("PostgreSQL key store unavailable or LISTEN connection lost; retrying with backoff", zap.Error(err))
		} else {
			b.logger().Debug("PostgreSQL key store still unavailable", zap.Error(err), zap.Duration("retry_in", backoff))
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: instances do not reconnect in step
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// listenOnce connects, LISTENs, resyncs and then applies notifications
// until the connection fails. connected reports whether it got that far.
func (b *pgBackend) listenOnce(first *bool) (connected bool, err error) {
	cctx, cancel := context.WithTimeout(b.ctx, pgConnectTimeout)
	conn, err := pgx.ConnectConfig(cctx, b.listenCfg)
	cancel()
	if err != nil {
		b.state.failure(b.now())
		return false, fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	qctx, cancel := context.WithTimeout(b.ctx, pgQueryTimeout)
	_, err = conn.Exec(qctx, "LISTEN "+notifyChannel)
	cancel()
	if err != nil {
		b.state.failure(b.now())
		return false, fmt.Errorf("LISTEN: %w", err)
	}
	if err := b.resync(*first); err != nil {
		b.state.failure(b.now())
		return false, fmt.Errorf("resynchronising the key cache: %w", err)
	}
	*first = false
	b.state.success()
	b.state.listening.Store(true)
	b.logger().Info("listening for key changes")

	for {
		wctx, cancel := context.WithTimeout(b.ctx, listenPingEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			b.apply(n.Payload)
			continue
		case b.ctx.Err() != nil:
			return true, nil
		case !pgconn.Timeout(err):
			return true, fmt.Errorf("waiting for notifications: %w", err)
		}
		pctx, cancel := context.WithTimeout(b.ctx, pgQueryTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return true, fmt.Errorf("pinging the LISTEN connection: %w", err)
		}
	}
}

// apply invalidates what a notification names: "key:<hex sha256>" or
// "org:<uuid>". Anything else is ignored.
func (b *pgBackend) apply(payload string) {
	switch kind, arg, _ := strings.Cut(payload, ":"); kind {
	case "key":
		var h KeyHash
		if n, err := hex.Decode(h[:], []byte(arg)); err == nil && n == len(h) {
			b.invalidate(h)
		}
	case "org":
		b.invalidateOrg(arg)
	}
}

// resync brings the cache up to date after (re)connecting: refusals are
// forgotten (a key may have been created meanwhile), cached keys are read
// again, and on the first connection the newest active keys are loaded.
func (b *pgBackend) resync(first bool) error {
	b.bumpAll()
	b.rejects.clear()
	if err := b.revalidate(); err != nil {
		return err
	}
	if first {
		return b.warm()
	}
	return nil
}
