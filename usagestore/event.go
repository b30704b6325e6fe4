package usagestore

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// CloudEvents attributes of a usage event.
const (
	specVersion     = "1.0"
	eventType       = "tenantgate.request.v1"
	dataContentType = "application/json"
	// ContentType is the Kafka record header value of a structured
	// CloudEvent.
	ContentType = "application/cloudevents+json"
	// sourcePrefix starts the source attribute: tenantgate://<node_id>.
	sourcePrefix = "tenantgate://"
)

// Outcome classifies a request for billing and analytics.
type Outcome string

// Outcomes.
const (
	// OutcomeAllowed: admitted by the limiter; the status says the rest.
	OutcomeAllowed Outcome = "allowed"
	// OutcomeRateLimitedMinute: denied by the per-minute bucket (429).
	OutcomeRateLimitedMinute Outcome = "rate_limited_minute"
	// OutcomeRateLimitedDay: denied by the daily quota (429).
	OutcomeRateLimitedDay Outcome = "rate_limited_day"
	// OutcomeBackendError: the backend failed (5xx from it, or 502/504
	// because it could not be reached or timed out).
	OutcomeBackendError Outcome = "backend_error"
	// OutcomeGatewayError: the gateway itself failed the request (panic,
	// misconfigured plan, a dependency down).
	OutcomeGatewayError Outcome = "gateway_error"
)

// Valid reports whether o is one of the outcomes.
func (o Outcome) Valid() bool {
	switch o {
	case OutcomeAllowed, OutcomeRateLimitedMinute, OutcomeRateLimitedDay, OutcomeBackendError, OutcomeGatewayError:
		return true
	}
	return false
}

// Event is one authenticated request, as the gateway emits it and the store
// keeps it. It never holds the API key, only its ID, and no raw path.
type Event struct {
	// ID is a UUIDv7, made once at request start and kept on every retry
	// and replay: the store counts each ID once.
	ID uuid.UUID
	// Time is when the request started (nanoseconds).
	Time time.Time
	// Node is the gateway's node ID; the CloudEvents source is
	// tenantgate://<Node>.
	Node string

	OrgID, KeyID, Plan, Service, Method string
	Status                              int
	Outcome                             Outcome
	BytesIn, BytesOut, DurationUS       int64
	RequestID                           string
	// RateLimitSource is redis, local or none.
	RateLimitSource string
}

// Bounds on decoded events: a record beyond them is poison.
const (
	maxFieldLen = 256
	// MaxRecordSize bounds an encoded event (Kafka record, spool record).
	MaxRecordSize = 8 << 10
)

// AppendCloudEvent appends the event as a CloudEvents 1.0 structured JSON
// object. It allocates nothing beyond growing dst.
func (e *Event) AppendCloudEvent(dst []byte) []byte {
	dst = append(dst, `{"specversion":"1.0","id":"`...)
	dst = appendUUID(dst, e.ID)
	dst = append(dst, `","type":"`+eventType+`","source":`...)
	dst = appendJSONString(dst, sourcePrefix, e.Node)
	dst = append(dst, `,"subject":`...)
	dst = appendJSONString(dst, "", e.OrgID)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","datacontenttype":"application/json","data":{"org_id":`...)
	dst = appendJSONString(dst, "", e.OrgID)
	dst = append(dst, `,"key_id":`...)
	dst = appendJSONString(dst, "", e.KeyID)
	dst = append(dst, `,"plan":`...)
	dst = appendJSONString(dst, "", e.Plan)
	dst = append(dst, `,"service":`...)
	dst = appendJSONString(dst, "", e.Service)
	dst = append(dst, `,"method":`...)
	dst = appendJSONString(dst, "", e.Method)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(e.Status), 10)
	dst = append(dst, `,"outcome":`...)
	dst = appendJSONString(dst, "", string(e.Outcome))
	dst = append(dst, `,"bytes_in":`...)
	dst = strconv.AppendInt(dst, e.BytesIn, 10)
	dst = append(dst, `,"bytes_out":`...)
	dst = strconv.AppendInt(dst, e.BytesOut, 10)
	dst = append(dst, `,"duration_us":`...)
	dst = strconv.AppendInt(dst, e.DurationUS, 10)
	dst = append(dst, `,"request_id":`...)
	dst = appendJSONString(dst, "", e.RequestID)
	dst = append(dst, `,"ratelimit_source":`...)
	dst = appendJSONString(dst, "", e.RateLimitSource)
	return append(dst, "}}"...)
}

func appendUUID(dst []byte, id uuid.UUID) []byte {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return append(dst, b[:]...)
}

// appendJSONString appends prefix+s as a JSON string. Invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(dst []byte, prefix, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	dst = append(dst, prefix...)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// cloudEvent is the decoding shape of a usage event.
type cloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	Subject         string    `json:"subject"`
	Time            string    `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            *dataJSON `json:"data"`
}

type dataJSON struct {
	OrgID           string  `json:"org_id"`
	KeyID           string  `json:"key_id"`
	Plan            string  `json:"plan"`
	Service         string  `json:"service"`
	Method          string  `json:"method"`
	Status          *int    `json:"status"`
	Outcome         Outcome `json:"outcome"`
	BytesIn         int64   `json:"bytes_in"`
	BytesOut        int64   `json:"bytes_out"`
	DurationUS      int64   `json:"duration_us"`
	RequestID       string  `json:"request_id"`
	RateLimitSource string  `json:"ratelimit_source"`
}

// ErrPoison wraps every reason a record is not a usage event.
var ErrPoison = errors.New("not a usage event")

// ParseCloudEvent decodes and validates a usage event. Anything that is not
// a well-formed tenantgate.request.v1 CloudEvent is an error wrapping
// ErrPoison.
func ParseCloudEvent(b []byte) (Event, error) {
	poison := func(format string, args ...any) (Event, error) {
		return Event{}, fmt.Errorf("%w: %s", ErrPoison, fmt.Sprintf(format, args...))
	}
	if len(b) > MaxRecordSize {
		return poison("%d bytes, more than %d", len(b), MaxRecordSize)
	}
	var ce cloudEvent
	if err := json.Unmarshal(b, &ce); err != nil {
		return poison("invalid JSON: %v", err)
	}
	switch {
	case ce.SpecVersion != specVersion:
		return poison("specversion %q, want %q", ce.SpecVersion, specVersion)
	case ce.Type != eventType:
		return poison("type %q, want %q", ce.Type, eventType)
	case ce.Data == nil:
		return poison("no data")
	case len(ce.Source) <= len(sourcePrefix) || ce.Source[:len(sourcePrefix)] != sourcePrefix:
		return poison("source %q does not start with %s", ce.Source, sourcePrefix)
	}
	id, err := uuid.Parse(ce.ID)
	if err != nil || len(ce.ID) != 36 {
		return poison("id %q is not a UUID", ce.ID)
	}
	t, err := time.Parse(time.RFC3339Nano, ce.Time)
	if err != nil {
		return poison("time %q is not RFC 3339", ce.Time)
	}
	d := ce.Data
	for _, f := range [...]struct{ name, v string }{{"org_id", d.OrgID}, {"key_id", d.KeyID}, {"plan", d.Plan},
		{"service", d.Service}, {"method", d.Method}, {"request_id", d.RequestID},
		{"ratelimit_source", d.RateLimitSource}, {"source", ce.Source}} {
		if len(f.v) > maxFieldLen {
			return poison("%s is longer than %d bytes", f.name, maxFieldLen)
		}
	}
	switch {
	case d.OrgID == "" || d.KeyID == "":
		return poison("org_id and key_id are required")
	case ce.Subject != d.OrgID:
		return poison("subject %q differs from org_id %q", ce.Subject, d.OrgID)
	case d.Status == nil || *d.Status < 100 || *d.Status > 999:
		return poison("status missing or out of range")
	case !d.Outcome.Valid():
		return poison("outcome %q is unknown", d.Outcome)
	case d.BytesIn < 0 || d.BytesOut < 0 || d.DurationUS < 0:
		return poison("negative bytes or duration")
	}
	return Event{
		ID: id, Time: t, Node: ce.Source[len(sourcePrefix):],
		OrgID: d.OrgID, KeyID: d.KeyID, Plan: d.Plan, Service: d.Service, Method: d.Method,
		Status: *d.Status, Outcome: d.Outcome, BytesIn: d.BytesIn, BytesOut: d.BytesOut,
		DurationUS: d.DurationUS, RequestID: d.RequestID, RateLimitSource: d.RateLimitSource,
	}, nil
}
