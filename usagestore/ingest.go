package usagestore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// DeadLetter is a record that is not counted: poison (not a usage event),
// late (older than the raw retention) or future (stamped more than a day
// ahead). Records from Kafka carry their position, which makes them unique.
type DeadLetter struct {
	Reason    string // poison, late or future
	Error     string
	Topic     string // empty when not from Kafka
	Partition int32
	Offset    int64
	// EventID and OccurredAt are set when the record parsed as an event.
	EventID    *uuid.UUID
	OccurredAt *time.Time
	OrgID      string
	Payload    []byte
}

// Dead-letter reasons.
const (
	ReasonPoison = "poison"
	ReasonLate   = "late"
	ReasonFuture = "future"
)

// maxDeadPayload bounds the payload kept of a dead letter.
const maxDeadPayload = 64 << 10

// Offset is a consumer position stored with a batch: the next offset to
// read of a group's topic partition.
type Offset struct {
	Group     string
	Topic     string
	Partition int32
	Next      int64
}

// Batch is what one Ingest call writes in one transaction.
type Batch struct {
	Events      []Event
	DeadLetters []DeadLetter
	Offsets     []Offset
}

// IngestResult says what a batch changed.
type IngestResult struct {
	// Inserted events are new: they were added to the rollups.
	Inserted int
	// Duplicates were already stored (a replay or a redelivery).
	Duplicates int
	// Late and Future events went to the dead letters.
	Late, Future int
	// Poison is the number of dead letters given as poison.
	Poison int
}

// rollupLevels are the granularities kept in rollup tables, one table each
// (usage_rollup_<granularity>).
var rollupLevels = [...]Granularity{Minute, Hour, Day}

const sqlInsertEvents = `INSERT INTO usage_events (event_id, occurred_at, org_id, key_id, plan, service, method,
		status, outcome, bytes_in, bytes_out, duration_us, request_id, ratelimit_source, source)
	SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::smallint[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::text[])
	ON CONFLICT DO NOTHING
	RETURNING event_id`

const sqlUpsertRollup = `INSERT INTO %s AS t (bucket, org_id, key_id, service, outcome, requests, bytes_in, bytes_out, latency)
	SELECT b, o, k, s, oc, r, bi, bo, h::bigint[]
	FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[])
		AS u(b, o, k, s, oc, r, bi, bo, h)
	ON CONFLICT (bucket, org_id, key_id, service, outcome) DO UPDATE SET
		requests  = t.requests + EXCLUDED.requests,
		bytes_in  = t.bytes_in + EXCLUDED.bytes_in,
		bytes_out = t.bytes_out + EXCLUDED.bytes_out,
		latency   = usage_hist_add(t.latency, EXCLUDED.latency)`

const sqlInsertDeadLetter = `INSERT INTO usage_dead_letters
		(reason, error, topic, kafka_partition, kafka_offset, event_id, occurred_at, org_id, payload)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
	ON CONFLICT DO NOTHING`

// Offsets only move forward: a batch finished by a consumer that lost its
// partition meanwhile cannot move the group back.
const sqlStoreOffset = `INSERT INTO usage_consumer_offsets AS o (group_id, topic, partition, next_offset)
	VALUES ($1, $2, $3, $4)
	ON CONFLICT (group_id, topic, partition) DO UPDATE
	SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()`

// Ingest writes a batch in one transaction: the raw events not stored yet
// (INSERT … ON CONFLICT DO NOTHING RETURNING), the rollups of exactly the
// rows that insert returned, the dead letters and the consumer offsets. So a
// batch applied twice, whole or in part, counts every event once, and the
// offsets never say more was stored than was.
func (s *Store) Ingest(ctx context.Context, b Batch) (IngestResult, error) {
	var res IngestResult
	now := s.now()
	oldest, newest := now.Add(-s.rawRetention), now.Add(maxFutureSkew)

	events := make([]*Event, 0, len(b.Events))
	seen := make(map[uuid.UUID]bool, len(b.Events))
	dead := slices.Clone(b.DeadLetters)
	res.Poison = len(dead)
	for i := range b.Events {
		e := &b.Events[i]
		switch {
		case seen[e.ID]:
			res.Duplicates++
			continue
		case e.Time.Before(oldest):
			res.Late++
			dead = append(dead, eventDeadLetter(e, ReasonLate, "older than the raw retention "+s.rawRetention.String()))
		case e.Time.After(newest):
			res.Future++
			dead = append(dead, eventDeadLetter(e, ReasonFuture, "more than "+maxFutureSkew.String()+" ahead of the store's clock"))
		default:
			events = append(events, e)
		}
		seen[e.ID] = true
	}
	// One lock order for every writer (event ID), so concurrent batches
	// that share events wait for each other instead of deadlocking.
	slices.SortFunc(events, func(a, b *Event) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	if err := s.ensurePartitions(ctx, events); err != nil {
		return res, err
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("beginning the usage batch: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()

	inserted, err := insertEvents(ctx, tx, events)
	if err != nil {
		return res, err
	}
	res.Inserted = len(inserted)
	res.Duplicates += len(events) - len(inserted)

	var batch pgx.Batch
	for _, g := range rollupLevels {
		queueRollup(&batch, "usage_rollup_"+string(g), g.Truncate, inserted)
	}
	for i := range dead {
		d := &dead[i]
		payload := d.Payload
		if len(payload) > maxDeadPayload {
			payload = payload[:maxDeadPayload]
		}
		var topic *string
		var partition *int32
		var offset *int64
		if d.Topic != "" {
			topic, partition, offset = &d.Topic, &d.Partition, &d.Offset
		}
		batch.Queue(sqlInsertDeadLetter, d.Reason, d.Error, topic, partition, offset, d.EventID, d.OccurredAt, nullable(d.OrgID), payload)
	}
	for _, o := range b.Offsets {
		batch.Queue(sqlStoreOffset, o.Group, o.Topic, o.Partition, o.Next)
	}
	if batch.Len() > 0 {
		if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
			return res, fmt.Errorf("writing the usage rollups: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("committing the usage batch: %w", err)
	}
	return res, nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func eventDeadLetter(e *Event, reason, msg string) DeadLetter {
	id, t := e.ID, e.Time
	return DeadLetter{Reason: reason, Error: msg, EventID: &id, OccurredAt: &t, OrgID: e.OrgID,
		Payload: e.AppendCloudEvent(nil)}
}

// insertEvents inserts the events and returns those that were new.
func insertEvents(ctx context.Context, tx pgx.Tx, events []*Event) ([]*Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	n := len(events)
	var (
		ids                                            = make([]uuid.UUID, n)
		times                                          = make([]time.Time, n)
		orgs, keys, plans, services, methods, outcomes = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		statuses                                       = make([]int16, n)
		bytesIn, bytesOut, durations                   = make([]int64, n), make([]int64, n), make([]int64, n)
		requestIDs, rlSources, sources                 = make([]string, n), make([]string, n), make([]string, n)
		byID                                           = make(map[uuid.UUID]*Event, n)
	)
	for i, e := range events {
		ids[i], times[i] = e.ID, e.Time
		orgs[i], keys[i], plans[i], services[i], methods[i] = e.OrgID, e.KeyID, e.Plan, e.Service, e.Method
		statuses[i], outcomes[i] = int16(e.Status), string(e.Outcome)
		bytesIn[i], bytesOut[i], durations[i] = e.BytesIn, e.BytesOut, e.DurationUS
		requestIDs[i], rlSources[i], sources[i] = e.RequestID, e.RateLimitSource, sourcePrefix+e.Node
		byID[e.ID] = e
	}
	rows, err := tx.Query(ctx, sqlInsertEvents, ids, times, orgs, keys, plans, services, methods,
		statuses, outcomes, bytesIn, bytesOut, durations, requestIDs, rlSources, sources)
	if err != nil {
		return nil, fmt.Errorf("inserting usage events: %w", err)
	}
	returned, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("inserting usage events: %w", err)
	}
	inserted := make([]*Event, 0, len(returned))
	for _, id := range returned {
		if e := byID[id]; e != nil {
			inserted = append(inserted, e)
		}
	}
	return inserted, nil
}

// RollupKey identifies a rollup row.
type RollupKey struct {
	Bucket                time.Time
	OrgID, KeyID, Service string
	Outcome               Outcome
}

// RollupRow is one rollup row: the requests of one key, service and
// outcome in one bucket, their bytes and their latency histogram.
type RollupRow struct {
	RollupKey
	Requests, BytesIn, BytesOut int64
	latency                     histogram
}

// Add counts one event into the row.
func (r *RollupRow) Add(e *Event) {
	r.Requests++
	r.BytesIn += e.BytesIn
	r.BytesOut += e.BytesOut
	r.latency.Observe(e.DurationUS)
}

// queueRollup adds the upsert of one rollup level computed from events.
func queueRollup(batch *pgx.Batch, table string, truncate func(time.Time) time.Time, events []*Event) {
	if len(events) == 0 {
		return
	}
	rows := make(map[RollupKey]*RollupRow)
	for _, e := range events {
		k := RollupKey{Bucket: truncate(e.Time), OrgID: e.OrgID, KeyID: e.KeyID, Service: e.Service, Outcome: e.Outcome}
		r := rows[k]
		if r == nil {
			r = &RollupRow{RollupKey: k}
			rows[k] = r
		}
		r.Add(e)
	}
	sorted := make([]*RollupRow, 0, len(rows))
	for _, r := range rows {
		sorted = append(sorted, r)
	}
	// One lock order for every writer.
	slices.SortFunc(sorted, func(a, b *RollupRow) int { return compareKeys(&a.RollupKey, &b.RollupKey) })
	n := len(sorted)
	buckets := make([]time.Time, n)
	orgs, keys, services, outcomes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	reqs, bin, bout := make([]int64, n), make([]int64, n), make([]int64, n)
	hists := make([]string, n)
	for i, r := range sorted {
		buckets[i], orgs[i], keys[i], services[i], outcomes[i] = r.Bucket, r.OrgID, r.KeyID, r.Service, string(r.Outcome)
		reqs[i], bin[i], bout[i] = r.Requests, r.BytesIn, r.BytesOut
		hists[i] = histogramLiteral(&r.latency)
	}
	batch.Queue(fmt.Sprintf(sqlUpsertRollup, table), buckets, orgs, keys, services, outcomes, reqs, bin, bout, hists)
}

func compareKeys(a, b *RollupKey) int {
	if c := a.Bucket.Compare(b.Bucket); c != 0 {
		return c
	}
	if c := cmp.Compare(a.OrgID, b.OrgID); c != 0 {
		return c
	}
	if c := cmp.Compare(a.KeyID, b.KeyID); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Service, b.Service); c != 0 {
		return c
	}
	return cmp.Compare(a.Outcome, b.Outcome)
}

// histogramLiteral renders a histogram as a PostgreSQL array literal.
func histogramLiteral(h *histogram) string {
	b := make([]byte, 0, 2+histogramBuckets*2)
	b = append(b, '{')
	for i, c := range h {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, c, 10)
	}
	return string(append(b, '}'))
}

// Offsets returns the stored next offsets of a consumer group's topic, by
// partition.
func (s *Store) Offsets(ctx context.Context, group, topic string) (map[int32]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT partition, next_offset FROM usage_consumer_offsets
		WHERE group_id = $1 AND topic = $2`, group, topic)
	if err != nil {
		return nil, fmt.Errorf("reading consumer offsets: %w", err)
	}
	defer rows.Close()
	out := make(map[int32]int64)
	for rows.Next() {
		var p int32
		var next int64
		if err := rows.Scan(&p, &next); err != nil {
			return nil, fmt.Errorf("reading consumer offsets: %w", err)
		}
		out[p] = next
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading consumer offsets: %w", err)
	}
	return out, nil
}
