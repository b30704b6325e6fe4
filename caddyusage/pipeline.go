package caddyusage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/usagestore"
)

// sink is where the pipeline delivers events.
type sink interface {
	// name labels metrics and logs: kafka, postgres or memory.
	name() string
	// deliver hands a batch over. Events it cannot deliver, now or later
	// (a broker that never acknowledges), it passes to failed; it must not
	// block for longer than a delivery takes.
	deliver(batch []*usagestore.Event, failed func([]*usagestore.Event))
	// deliverAll delivers every event or returns an error (the spool's
	// replay: a segment is deleted only after all of it is acknowledged).
	deliverAll(ctx context.Context, events []*usagestore.Event) error
	// failing reports the latest delivery error, nil when the latest
	// delivery succeeded.
	failing() error
	// close flushes what is in flight (within ctx) and releases the sink;
	// what it cannot deliver goes to failed.
	close(ctx context.Context, failed func([]*usagestore.Event))
}

// Pipeline tuning.
const (
	maxDispatchBatch = 2000
	// dispatchLinger is how long the dispatcher lets events gather after
	// the first one. While it sleeps, the handlers' sends only fill the
	// buffer and wake no goroutine: one wake-up per linger instead of one
	// per request.
	dispatchLinger   = 10 * time.Millisecond
	replayMinBackoff = time.Second
	replayMaxBackoff = 30 * time.Second
	// spoolFlushDelay lets events that overflow together share one fsync.
	spoolFlushDelay = 5 * time.Millisecond
	// stopTimeout bounds the flush of a graceful stop.
	stopTimeout = 10 * time.Second
)

// pipeline is the process's usage pipeline: a bounded buffer, a sink, and
// the disk spool behind both. One exists per process (pipelinePool); it
// survives reloads, which only swap its sink.
type pipeline struct {
	events   chan *usagestore.Event
	services *serviceLabels
	metrics  *metrics

	sink    atomic.Pointer[sinkBox]
	sinkKey string // configuration fingerprint of the current sink
	sinkMu  sync.Mutex

	// spool is opened by the first use (startLocked); spoolDir and
	// spoolSize are what it opens.
	spool     *spool
	spoolDir  string
	spoolSize int64
	started   atomic.Bool
	spoolMu   sync.Mutex
	toSpool   []*usagestore.Event // waiting for the spool writer
	spoolSig  chan struct{}
	// spoolBacklog bounds toSpool.
	spoolBacklog int
	dropping     atomic.Int64 // Unix ns of the latest drop

	logger atomic.Pointer[zap.Logger]
	node   atomic.Pointer[string] // node_id, the events' source
	closed atomic.Bool
	stop   chan struct{}
	kick   chan struct{} // wakes the replayer
	wg     sync.WaitGroup
}

type sinkBox struct{ sink }

// newPipeline opens the spool and starts the pipeline's goroutines with no
// sink yet (events wait in the buffer until use sets one).
func newPipeline(buffer int, spoolDir string, spoolSize int64, m *metrics, logger *zap.Logger) (*pipeline, error) {
	p := preparePipeline(buffer, spoolDir, spoolSize, m, logger)
	p.sinkMu.Lock()
	defer p.sinkMu.Unlock()
	if err := p.startLocked(); err != nil {
		return nil, err
	}
	return p, nil
}

// preparePipeline returns a pipeline that takes events into its buffer but
// has not opened its spool yet: the first use does, so that a config that
// is only validated, or fails to load, never locks or replays a spool that
// a running gateway owns.
func preparePipeline(buffer int, spoolDir string, spoolSize int64, m *metrics, logger *zap.Logger) *pipeline {
	p := &pipeline{
		events:       make(chan *usagestore.Event, buffer),
		services:     newServiceLabels(),
		metrics:      m,
		spoolDir:     spoolDir,
		spoolSize:    spoolSize,
		spoolSig:     make(chan struct{}, 1),
		spoolBacklog: max(buffer, 10_000),
		stop:         make(chan struct{}),
		kick:         make(chan struct{}, 1),
	}
	p.logger.Store(logger)
	node := "tenantgate"
	p.node.Store(&node)
	return p
}

// startLocked opens the spool and starts the dispatcher, the spool writer
// and the replayer, once; the caller holds sinkMu.
func (p *pipeline) startLocked() error {
	if p.started.Load() {
		return nil
	}
	sp, err := openSpool(p.spoolDir, p.spoolSize, p.metrics)
	if err != nil {
		return err
	}
	p.spool = sp
	p.metrics.spoolBytes.Set(float64(sp.size()))
	if n := sp.records(); n > 0 {
		p.logger.Load().Info("usage spool holds events from an earlier run; they are replayed when the sink accepts them",
			zap.String("dir", p.spoolDir), zap.Int64("events", n))
	}
	p.wg.Add(3)
	go p.dispatch()
	go p.writeSpool()
	go p.replay()
	p.started.Store(true)
	return nil
}

// emit hands an event over without blocking: to the buffer, else to the
// spool writer, else it is dropped and counted.
func (p *pipeline) emit(e *usagestore.Event) {
	e.Node = *p.node.Load()
	p.metrics.emitted.Inc()
	select {
	case p.events <- e:
		return
	default:
	}
	p.spoolLater([]*usagestore.Event{e})
}

// spoolLater queues events for the spool writer, or drops them (counted)
// when its backlog is full.
func (p *pipeline) spoolLater(events []*usagestore.Event) {
	p.spoolMu.Lock()
	room := p.spoolBacklog - len(p.toSpool)
	n := min(room, len(events))
	if n > 0 {
		p.toSpool = append(p.toSpool, events[:n]...)
	}
	p.spoolMu.Unlock()
	if n < len(events) {
		p.drop("spool_backlog", len(events)-n)
	}
	if n > 0 {
		select {
		case p.spoolSig <- struct{}{}:
		default:
		}
	}
}

func (p *pipeline) drop(reason string, n int) {
	p.metrics.dropped.WithLabelValues(reason).Add(float64(n))
	p.dropping.Store(time.Now().UnixNano())
}

// dispatch moves events from the buffer to the sink in batches.
func (p *pipeline) dispatch() {
	defer p.wg.Done()
	batch := make([]*usagestore.Event, 0, maxDispatchBatch)
	for {
		var e *usagestore.Event
		select {
		case e = <-p.events:
		case <-p.stop:
			// Drain what is buffered, then stop.
			for {
				batch = batch[:0]
				for len(batch) < maxDispatchBatch {
					select {
					case e := <-p.events:
						batch = append(batch, e)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				p.deliver(batch)
			}
		}
		if len(p.events) < maxDispatchBatch/2 {
			time.Sleep(dispatchLinger)
		}
		batch = append(batch[:0], e)
	fill:
		for len(batch) < maxDispatchBatch {
			select {
			case e := <-p.events:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		p.deliver(batch)
	}
}

func (p *pipeline) deliver(batch []*usagestore.Event) {
	box := p.sink.Load()
	// While the sink fails, events go straight to the disk (durable in
	// milliseconds, not after a delivery timeout); the replayer finds out
	// when the sink works again.
	if box == nil || box.failing() != nil {
		p.spoolLater(batch)
		return
	}
	box.deliver(batch, p.failed)
}

// failed is the sinks' callback for events they could not deliver.
func (p *pipeline) failed(events []*usagestore.Event) {
	p.spoolLater(events)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// writeSpool appends queued events to the spool, one fsync per batch.
func (p *pipeline) writeSpool() {
	defer p.wg.Done()
	for {
		stopping := false
		select {
		case <-p.spoolSig:
			time.Sleep(spoolFlushDelay)
		case <-p.stop:
			stopping = true
		}
		p.flushSpool()
		if stopping {
			return
		}
	}
}

func (p *pipeline) flushSpool() {
	p.spoolMu.Lock()
	events := p.toSpool
	p.toSpool = nil
	p.spoolMu.Unlock()
	if len(events) == 0 {
		return
	}
	written, err := p.spool.append(events)
	p.metrics.spooled.Add(float64(written))
	p.metrics.spoolBytes.Set(float64(p.spool.size()))
	if rest := len(events) - written; rest > 0 {
		reason := "spool_full"
		if err != nil && !errors.Is(err, errSpoolFull) {
			reason = "spool_error"
			p.logger.Load().Error("writing the usage spool failed; events dropped", zap.Int("events", rest), zap.Error(err))
		}
		p.drop(reason, rest)
	}
}

// replay delivers the spool, oldest segment first, whenever it holds
// events, backing off while the sink fails.
func (p *pipeline) replay() {
	defer p.wg.Done()
	backoff := replayMinBackoff
	timer := time.NewTimer(replayMinBackoff)
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		case <-p.kick:
			// A failure: the spool is growing; look again after the backoff.
			continue
		}
		ok := p.replayOnce()
		p.health(context.Background()) // keeps the sink_state gauge current
		if ok {
			backoff = replayMinBackoff
		} else {
			backoff = min(backoff*2, replayMaxBackoff)
		}
		timer.Reset(backoff)
	}
}

// replayOnce replays segments until the spool is empty or the sink fails;
// it reports whether the spool was drained.
func (p *pipeline) replayOnce() bool {
	for {
		select {
		case <-p.stop:
			return true
		default:
		}
		box := p.sink.Load()
		if box == nil {
			return false
		}
		seg, ok := p.spool.oldest()
		if !ok {
			return true
		}
		events, err := p.spool.read(seg)
		if err != nil {
			p.logger.Load().Error("reading a usage spool segment failed", zap.String("segment", seg.path), zap.Error(err))
			return false
		}
		if len(events) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err = box.deliverAll(ctx, events)
			cancel()
			if err != nil {
				p.logger.Load().Warn("replaying the usage spool failed; retrying later", zap.String("sink", box.name()), zap.Error(err))
				return false
			}
		}
		if err := p.spool.remove(seg); err != nil {
			p.logger.Load().Error("removing a replayed usage spool segment failed", zap.String("segment", seg.path), zap.Error(err))
			return false
		}
		p.metrics.replayed.Add(float64(len(events)))
		p.metrics.spoolBytes.Set(float64(p.spool.size()))
	}
}

// use installs the sink built by mk unless one with the same key is in
// place; the previous sink is closed and what it had in flight spooled.
func (p *pipeline) use(key string, mk func() (sink, error)) error {
	p.sinkMu.Lock()
	defer p.sinkMu.Unlock()
	if err := p.startLocked(); err != nil {
		return err
	}
	if key == p.sinkKey && p.sink.Load() != nil {
		return nil
	}
	s, err := mk()
	if err != nil {
		return err
	}
	old := p.sink.Swap(&sinkBox{s})
	p.sinkKey = key
	for _, name := range []string{"kafka", "postgres", "memory"} {
		v := 0.0
		if name == s.name() {
			v = 1
		}
		p.metrics.sinkActive.WithLabelValues(name).Set(v)
	}
	if old != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		old.close(ctx, p.failed)
		cancel()
	}
	return nil
}

// memoryStore returns the memory sink's store when it is the sink.
func (p *pipeline) memoryStore() *memoryStore {
	if box := p.sink.Load(); box != nil {
		m, _ := box.sink.(*memoryStore)
		return m
	}
	return nil
}

// health reports the pipeline for /health/ready: down while events are
// being dropped, degraded while the sink fails or the spool holds events,
// ok otherwise.
func (p *pipeline) health(context.Context) tenant.CheckResult {
	state, detail := p.state()
	p.metrics.sinkState.Set(float64(map[tenant.Status]int{tenant.StatusOK: 0, tenant.StatusDegraded: 1, tenant.StatusDown: 2}[state]))
	return tenant.CheckResult{Status: state, Detail: detail}
}

func (p *pipeline) state() (tenant.Status, string) {
	if !p.started.Load() {
		return tenant.StatusDegraded, "not started"
	}
	box := p.sink.Load()
	name := "none"
	var serr error
	if box != nil {
		name = box.name()
		serr = box.failing()
	}
	if last := p.dropping.Load(); last != 0 && time.Since(time.Unix(0, last)) < time.Minute {
		return tenant.StatusDown, fmt.Sprintf("%s sink: events dropped in the last minute (spool full)", name)
	}
	if n := p.spool.records(); n > 0 || serr != nil {
		detail := fmt.Sprintf("%s sink: spooling to disk (%d events, %d bytes)", name, n, p.spool.size())
		if serr != nil {
			detail += ": " + serr.Error()
		}
		return tenant.StatusDegraded, detail
	}
	return tenant.StatusOK, name + " sink"
}

// Destruct stops the pipeline gracefully: the buffer is delivered, the
// sink flushed, and what could not be delivered is spooled.
func (p *pipeline) Destruct() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	p.sinkMu.Lock() // no start from now on
	started := p.started.Load()
	p.sinkMu.Unlock()
	if !started {
		// Never served a config: no event reached it, no spool to close.
		return nil
	}
	close(p.stop)
	p.wg.Wait() // dispatcher drained the buffer; replayer and writer stopped
	if box := p.sink.Load(); box != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		box.close(ctx, p.spoolLater)
		cancel()
	}
	// Late emits (requests finishing during shutdown) and the sink's
	// leftovers.
	for {
		select {
		case e := <-p.events:
			p.spoolLater([]*usagestore.Event{e})
			continue
		default:
		}
		break
	}
	p.flushSpool()
	return p.spool.close()
}

// Interface guard
var _ caddy.Destructor = (*pipeline)(nil)
