package keystore

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Lookup lanes. A cache miss costs a PostgreSQL query, and the key checksum
// is no secret: anyone can mint well-formed keys, thousands a second. So
// misses reach PostgreSQL through two bounded lanes, chosen by the key
// filter (filter.go):
//
//   - the normal lane takes keys the filter knows (and every key until the
//     filter is built): real keys that are not cached, and the filter's rare
//     false positives;
//   - the unverified lane takes keys the filter does not know: forgeries,
//     or a key created so recently that its notification has not arrived.
//     A few run at once and a few wait; the rest fail at once.
//
// A lookup that finds its lane full, or waits past its deadline, gets
// ErrBusy: 503 for that request only. It is not a PostgreSQL failure, so a
// flood of forged keys neither marks PostgreSQL down nor pauses the normal
// lane, and real keys keep being checked beside it.
type lane struct {
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
	shed       prometheus.Counter // lookups turned away
	// The refusals, built once: a flood meets them thousands of times a
	// second.
	errFull, errDeadline error
}

// Lane sizes. The pool's connections are shared by the lanes and the
// background work (refresh, filter build, last-use flush), which keeps
// backgroundConns for itself.
const (
	backgroundConns = 1
	// maxUnverified bounds the unverified lane's concurrency;
	// unverifiedWaitFactor × its concurrency may wait.
	maxUnverified        = 4
	unverifiedWaitFactor = 4
	// normalWaitFactor × the normal lane's concurrency may wait.
	normalWaitFactor = 256
)

// laneSizes divides a pool of maxConns connections: a fifth (1 to
// maxUnverified) for the unverified lane, backgroundConns for background
// work, the rest (at least 1) for the normal lane.
func laneSizes(maxConns int) (normal, unverified int) {
	unverified = min(max(maxConns/5, 1), maxUnverified)
	normal = max(maxConns-unverified-backgroundConns, 1)
	return normal, unverified
}

func newLane(name string, concurrency, maxWaiting int, shed prometheus.Counter) *lane {
	return &lane{slots: make(chan struct{}, concurrency), maxWaiting: int64(maxWaiting), shed: shed,
		errFull:     fmt.Errorf("%w (%s lane full)", ErrBusy, name),
		errDeadline: fmt.Errorf("%w (waited for the %s lane until the deadline)", ErrBusy, name)}
}

// enter takes a slot, waiting for one up to timeout (or until ctx ends) if
// the lane's queue has room. It fails with ErrBusy; on success the caller
// must leave. Only a lookup that waits sets a timer.
func (l *lane) enter(ctx context.Context, timeout time.Duration) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	if l.waiting.Add(1) > l.maxWaiting {
		l.waiting.Add(-1)
		l.shed.Inc()
		return l.errFull
	}
	defer l.waiting.Add(-1)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-deadline.C:
	case <-ctx.Done():
	}
	l.shed.Inc()
	return l.errDeadline
}

// leave gives the slot back.
func (l *lane) leave() { <-l.slots }
