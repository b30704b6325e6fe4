-- Usage analytics: one raw row per authenticated request, rollups per
-- minute, hour and day, a dead-letter table and the Kafka consumer's
-- offsets. docs/usage.md describes the tables and how they are filled.
--
-- The same migration runs on plain PostgreSQL (usage_events partitioned by
-- day, partitions made ahead and dropped by usage_maintain) and on
-- TimescaleDB when the extension can be created (hypertables with
-- compression and retention policies). The queries are the same either way.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION timescaledb;
        EXCEPTION WHEN OTHERS THEN
            -- Installed but not loadable (e.g. not in shared_preload_libraries):
            -- plain PostgreSQL partitions then.
            RAISE NOTICE 'timescaledb is available but cannot be created (%); using native partitions', SQLERRM;
        END;
    END IF;
END
$$;
-- +goose StatementEnd

-- Adds two latency histograms bucket by bucket (the rollups' upsert).
CREATE FUNCTION usage_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

-- Sums latency histograms (the report's GROUP BY).
CREATE AGGREGATE usage_hist_sum(bigint[]) (SFUNC = usage_hist_add, STYPE = bigint[]);

-- +goose StatementBegin
DO $$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    raw_columns text := $cols$
        event_id         uuid        NOT NULL,
        occurred_at      timestamptz NOT NULL,
        org_id           text        NOT NULL,
        key_id           text        NOT NULL,
        plan             text        NOT NULL,
        service          text        NOT NULL,
        method           text        NOT NULL,
        status           smallint    NOT NULL,
        outcome          text        NOT NULL,
        bytes_in         bigint      NOT NULL,
        bytes_out        bigint      NOT NULL,
        duration_us      bigint      NOT NULL,
        request_id       text        NOT NULL,
        ratelimit_source text        NOT NULL,
        source           text        NOT NULL,
        ingested_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (event_id, occurred_at)
    $cols$;
    rollup_columns text := $cols$
        bucket    timestamptz NOT NULL,
        org_id    text        NOT NULL,
        key_id    text        NOT NULL,
        service   text        NOT NULL,
        outcome   text        NOT NULL,
        requests  bigint      NOT NULL,
        bytes_in  bigint      NOT NULL,
        bytes_out bigint      NOT NULL,
        latency   bigint[]    NOT NULL,
        PRIMARY KEY (bucket, org_id, key_id, service, outcome)
    $cols$;
    level record;
BEGIN
    IF timescale THEN
        EXECUTE 'CREATE TABLE usage_events (' || raw_columns || ')';
        PERFORM create_hypertable('usage_events', 'occurred_at', chunk_time_interval => interval '1 day');
        EXECUTE 'ALTER TABLE usage_events SET (timescaledb.compress, timescaledb.compress_segmentby = ''org_id'')';
        PERFORM add_compression_policy('usage_events', interval '2 days');
        PERFORM add_retention_policy('usage_events', interval '7 days');
    ELSE
        EXECUTE 'CREATE TABLE usage_events (' || raw_columns || ') PARTITION BY RANGE (occurred_at)';
    END IF;

    FOR level IN SELECT * FROM (VALUES
            ('usage_rollup_minute', interval '1 day',   interval '7 days',   interval '35 days'),
            ('usage_rollup_hour',   interval '7 days',  interval '30 days',  interval '400 days'),
            ('usage_rollup_day',    interval '30 days', interval '90 days',  NULL::interval))
            AS v(name, chunk, compress_after, keep) LOOP
        EXECUTE format('CREATE TABLE %I (%s)', level.name, rollup_columns);
        EXECUTE format('CREATE INDEX ON %I (org_id, bucket)', level.name);
        IF timescale THEN
            PERFORM create_hypertable(level.name::regclass, 'bucket', chunk_time_interval => level.chunk);
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = ''org_id'')', level.name);
            PERFORM add_compression_policy(level.name::regclass, level.compress_after);
            IF level.keep IS NOT NULL THEN
                PERFORM add_retention_policy(level.name::regclass, level.keep);
            END IF;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd


-- Events that are not counted: poison records (not a usage event) and late
-- ones (older than the raw retention, whose duplicates could no longer be
-- recognised). Kafka records are unique by position, others by event id, so
-- a replay adds nothing.
CREATE TABLE usage_dead_letters (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL CHECK (reason IN ('poison', 'late', 'future')),
    error        text        NOT NULL,
    topic        text,
    kafka_partition integer,
    kafka_offset bigint,
    event_id     uuid,
    occurred_at  timestamptz,
    org_id       text,
    payload      bytea       NOT NULL
);
CREATE UNIQUE INDEX usage_dead_letters_position ON usage_dead_letters (topic, kafka_partition, kafka_offset)
    WHERE topic IS NOT NULL;
CREATE UNIQUE INDEX usage_dead_letters_event ON usage_dead_letters (event_id)
    WHERE topic IS NULL AND event_id IS NOT NULL;

-- The consumer's Kafka positions, written in the transaction of the batch
-- they follow: the next offset to read per group, topic and partition.
CREATE TABLE usage_consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Creates the daily partitions of usage_events from day_from to day_to
-- (inclusive) that do not exist yet. A no-op on TimescaleDB.
-- +goose StatementBegin
CREATE FUNCTION usage_ensure_partitions(day_from date, day_to date) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    d date;
    made integer := 0;
    name text;
BEGIN
    -- A hypertable is a plain table to PostgreSQL: nothing to do.
    IF (SELECT relkind FROM pg_class WHERE oid = 'usage_events'::regclass) <> 'p' THEN
        RETURN 0;
    END IF;
    FOR d IN SELECT generate_series(day_from, day_to, interval '1 day')::date LOOP
        name := 'usage_events_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
                    name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                made := made + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL; -- made by a concurrent caller
            END;
        END IF;
    END LOOP;
    RETURN made;
END
$$;
-- +goose StatementEnd

-- Drops the raw events older than at - keep (whole days: partitions, or chunks
-- on TimescaleDB) and the minute and hour rollups past their retention on
-- plain PostgreSQL (TimescaleDB's retention policies do it there). Returns
-- the number of partitions dropped.
-- +goose StatementBegin
CREATE FUNCTION usage_drop_expired(at timestamptz, keep interval) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    p record;
    dropped integer := 0;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'usage_events'::regclass) <> 'p' THEN
        -- A TimescaleDB hypertable (dynamic SQL: plain PostgreSQL lacks drop_chunks).
        EXECUTE 'SELECT count(*) FROM drop_chunks(''usage_events'', older_than => $1)'
            INTO dropped USING at - keep;
        RETURN dropped;
    END IF;
    FOR p IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass
          AND c.relname ~ '^usage_events_[0-9]{8}$'
          AND to_date(substr(c.relname, 14), 'YYYYMMDD') + 1 <= (at - keep) AT TIME ZONE 'UTC'
    LOOP
        EXECUTE format('DROP TABLE %I', p.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM usage_rollup_minute WHERE bucket < at - interval '35 days';
    DELETE FROM usage_rollup_hour WHERE bucket < at - interval '400 days';
    RETURN dropped;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION IF EXISTS usage_drop_expired(timestamptz, interval);
DROP FUNCTION IF EXISTS usage_ensure_partitions(date, date);
DROP TABLE IF EXISTS usage_consumer_offsets;
DROP TABLE IF EXISTS usage_dead_letters;
DROP TABLE IF EXISTS usage_rollup_day;
DROP TABLE IF EXISTS usage_rollup_hour;
DROP TABLE IF EXISTS usage_rollup_minute;
DROP TABLE IF EXISTS usage_events;
DROP AGGREGATE IF EXISTS usage_hist_sum(bigint[]);
DROP FUNCTION IF EXISTS usage_hist_add(bigint[], bigint[]);
