package keystore

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
func (s *Store) listenLoop() {
	defer s.wg.Done()
	backoff := listenMinBackoff
	first := true
	failures := 0 // since the last time the connection was up
	for s.ctx.Err() == nil {
		connected, err := s.listenOnce(&first)
		s.state.listening.Store(false)
		if s.ctx.Err() != nil {
			return
		}
		if connected {
			backoff, failures = listenMinBackoff, 0
		}
		// The first failure of a streak is a warning; the retries are not.
		if failures++; failures == 1 {
			s.logger().Warn("PostgreSQL key store unavailable or LISTEN connection lost; retrying with backoff", zap.Error(err))
		} else {
			s.logger().Debug("PostgreSQL key store still unavailable", zap.Error(err), zap.Duration("retry_in", backoff))
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: instances do not reconnect in step
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// listenOnce connects, LISTENs, resyncs and then applies notifications
// until the connection fails. connected reports whether it got that far.
func (s *Store) listenOnce(first *bool) (connected bool, err error) {
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
	if err := s.resync(*first); err != nil {
		s.state.failure(s.now(), err)
		return false, fmt.Errorf("resynchronising the key cache: %w", err)
	}
	*first = false
	s.state.reachable()
	s.state.listening.Store(true)
	s.logger().Info("listening for key changes")

	for {
		wctx, cancel := context.WithTimeout(s.ctx, listenPingEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			s.apply(n.Payload)
			continue
		case s.ctx.Err() != nil:
			return true, nil
		case !pgconn.Timeout(err):
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

// apply invalidates what a notification names: "key:<hex sha256>" or
// "org:<uuid>". Anything else is ignored.
func (s *Store) apply(payload string) {
	switch kind, arg, _ := strings.Cut(payload, ":"); kind {
	case "key":
		var h KeyHash
		if n, err := hex.Decode(h[:], []byte(arg)); err == nil && n == len(h) {
			s.invalidate(h)
		}
	case "org":
		s.invalidateOrg(arg)
	}
}

// resync brings the cache up to date after (re)connecting: refusals are
// forgotten (a key may have been created meanwhile), cached keys are read
// again, and on the first connection the newest active keys are loaded.
func (s *Store) resync(first bool) error {
	s.bumpAll()
	s.rejects.clear()
	if err := s.revalidate(); err != nil {
		return err
	}
	if first {
		return s.warm()
	}
	return nil
}
