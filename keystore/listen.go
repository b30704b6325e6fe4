package keystore

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// notifyChannel is the channel the migrations' triggers notify on.
const notifyChannel = "tenantgate_keys"

// Reconnection backoff of the LISTEN connection, and how often an idle
// LISTEN connection is pinged so that a silently dead one is noticed. The
// backoff is capped below a second, so that once PostgreSQL is back a
// revocation is enforced within a second; a query that succeeds meanwhile
// (a lookup, a refresh) cuts the wait short.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 500 * time.Millisecond
	listenPingEvery  = 10 * time.Second
)

// listenLoop keeps a LISTEN connection open for the store's lifetime.
func (s *Store) listenLoop() {
	defer s.wg.Done()
	backoff := s.opts.listenMinBackoff
	failures := 0 // since the last time the connection was up
	for s.ctx.Err() == nil {
		connected, err := s.listenOnce()
		s.state.listening.Store(false)
		if s.ctx.Err() != nil {
			return
		}
		if connected {
			backoff, failures = s.opts.listenMinBackoff, 0
		}
		// The first failure of a streak is a warning; the retries are not.
		if failures++; failures == 1 {
			s.logger().Warn("PostgreSQL key store unavailable or LISTEN connection lost; reconnecting", zap.Error(err))
		} else {
			s.logger().Debug("PostgreSQL key store still unavailable", zap.Error(err), zap.Duration("retry_in", backoff))
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: instances do not reconnect in step
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.state.wake: // PostgreSQL answered a query: it is back
			t.Stop()
		}
		backoff = min(2*backoff, s.opts.listenMaxBackoff)
	}
}

// listenOnce connects, LISTENs and applies notifications until the
// connection fails; connected reports whether it got that far. The
// notifications sent while it was away are lost, so once listening it has
// the maintenance loop re-read the cached keys and rebuild the key filter
// (and warm the cache the first time), while it goes on applying
// notifications: a slow warm-up never holds up a revocation.
func (s *Store) listenOnce() (connected bool, err error) {
	cctx, cancel := context.WithTimeout(s.ctx, connectTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.listenCfg)
	cancel()
	if err != nil {
		s.state.failure(s.now(), err)
		return false, fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	qctx, cancel := context.WithTimeout(s.ctx, s.opts.queryTimeout)
	_, err = conn.Exec(qctx, "LISTEN "+notifyChannel)
	cancel()
	if err != nil {
		s.state.failure(s.now(), err)
		return false, fmt.Errorf("LISTEN: %w", err)
	}
	// Refusals cached before may be stale (a key created meanwhile), and
	// results of queries running now may predate changes we missed.
	s.bumpAll()
	s.rejects.clear()
	s.state.reachable()
	s.state.listening.Store(true)
	signal(s.resync)
	s.logger().Info("listening for key changes")

	// A probe (a query timed out) ends the current wait, so that the
	// connection is pinged at once.
	var cancelWait atomic.Pointer[context.CancelFunc]
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-s.state.probe:
				if cancel := cancelWait.Load(); cancel != nil {
					(*cancel)()
				}
			}
		}
	}()
	for {
		wctx, cancel := context.WithTimeout(s.ctx, listenPingEvery)
		cancelWait.Store(&cancel)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			s.apply(n.Payload)
			continue
		case s.ctx.Err() != nil:
			return true, nil
		case wctx.Err() == nil:
			return true, fmt.Errorf("waiting for notifications: %w", err)
		}
		pctx, cancel := context.WithTimeout(s.ctx, s.opts.queryTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return true, fmt.Errorf("pinging the LISTEN connection: %w", err)
		}
	}
}

// apply handles what a notification names: "key:<hex sha256>" (a key was
// created, changed or deleted: it is invalidated, and added to the key
// filter in case it is new) or "org:<uuid>". Anything else is ignored.
func (s *Store) apply(payload string) {
	switch kind, arg, _ := strings.Cut(payload, ":"); kind {
	case "key":
		var h KeyHash
		if n, err := hex.Decode(h[:], []byte(arg)); err == nil && n == len(h) {
			s.invalidate(h)
			s.addToFilter(h)
		}
	case "org":
		s.invalidateOrg(arg)
	}
}
