package caddyusage

import (
	"context"
	"errors"
	"io"

	"github.com/tenantgate/tenantgate/usagestore"
)

// Reading usage from the same process: the admin API (tenant_admin) and
// the tenants' own report (tenant_usage_report) answer from what this
// process's pipeline writes to, with the same query as `caddy tenant usage
// report`.

// ErrNoUsageStore means this process's pipeline keeps no usage it can
// read: there is no pipeline, or its sink is Kafka (the consumer writes
// the usage database; read that with usagestore).
var ErrNoUsageStore = errors.New("this gateway's usage pipeline keeps no usage it can read")

// Report answers a report from this process's pipeline: its memory store
// (the last 24 hours; source "memory"), or the usage database its postgres
// sink writes (source "postgres"). It fails with ErrNoUsageStore otherwise.
func Report(ctx context.Context, q usagestore.ReportQuery) (rows []usagestore.ReportRow, source string, err error) {
	p := runningPipeline()
	if p == nil {
		return nil, "", ErrNoUsageStore
	}
	if mem := p.memoryStore(); mem != nil {
		rows, err = mem.report(q)
		return rows, "memory", err
	}
	box := p.sink.Load()
	if box == nil {
		return nil, "", ErrNoUsageStore
	}
	if pg, ok := box.sink.(*postgresSink); ok {
		rows, err = pg.store.Report(ctx, q)
		return rows, "postgres", err
	}
	return nil, "", ErrNoUsageStore
}

// WriteCSV writes a report as `caddy tenant usage report --csv` does.
func WriteCSV(w io.Writer, q usagestore.ReportQuery, rows []usagestore.ReportRow) error {
	return writeCSV(w, q, rows)
}

// runningPipeline is the process's pipeline, or nil.
func runningPipeline() *pipeline {
	var p *pipeline
	pipelinePool.Range(func(_, v any) bool {
		p, _ = v.(*pipeline)
		return false
	})
	return p
}
