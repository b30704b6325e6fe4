package caddyadmin

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Idempotency-Key on POST: a retry with the same key and the same body
// gets the first answer again (same status, same body, so the same created
// ID, and for a key creation the same key, shown once more), and changes
// nothing; the same key with another body is a 422.
//
// The first answer is kept in PostgreSQL (table admin_idempotency), so it
// holds across gateway instances and restarts, for idempotency_ttl. It is
// kept encrypted: AES-256-GCM under a key derived with HKDF-SHA256 from the
// admin token and the Idempotency-Key, neither of which is stored (the row
// is found by a SHA-256 of the Idempotency-Key). A reader of the database
// cannot recover a created API key from it without both. Without a token the derivation has only the Idempotency-Key, so
// clients should use random ones (UUIDs).
//
// The operation and the record share one transaction: the record is
// inserted first, so a concurrent retry with the same key waits on it and
// then replays the committed answer; a failed operation rolls back and
// leaves no record (its retry runs again).

const idempotencyHeader = "Idempotency-Key"

// maxIdempotencyKeyLen bounds an Idempotency-Key.
const maxIdempotencyKeyLen = 255

// sweepEvery spaces the deletions of expired records.
const sweepEvery = time.Minute

// storedReply is what is sealed: the first answer.
type storedReply struct {
	Status   int             `json:"status"`
	Location string          `json:"location,omitempty"`
	Body     json.RawMessage `json:"body"`
	OrgID    string          `json:"org_id,omitempty"`
	KeyID    string          `json:"key_id,omitempty"`
}

var errReplay = errors.New("replay")

// idempotent runs op once per Idempotency-Key and request.
func (a *TenantAdmin) idempotent(ctx context.Context, c *call, key string, op func(*call) (*reply, error)) (*reply, error) {
	if err := checkIdempotencyKey(key); err != nil {
		return nil, err
	}
	a.sweepIdempotency(ctx)
	id := a.idempotencyID(key)
	fp := fingerprint(c)
	for attempt := 0; ; attempt++ {
		var rep *reply
		err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM admin_idempotency WHERE id = $1 AND expires_at <= now()`, id); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO admin_idempotency (id, fingerprint, response, expires_at)
				VALUES ($1, $2, '', now() + make_interval(secs => $3)) ON CONFLICT (id) DO NOTHING`,
				id, fp[:], time.Duration(a.IdempotencyTTL).Seconds())
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return errReplay
			}
			c.db = tx
			if rep, err = op(c); err != nil {
				return err
			}
			sealed, err := a.seal(key, id, rep)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE admin_idempotency SET response = $2 WHERE id = $1`, id, sealed)
			return err
		})
		if !errors.Is(err, errReplay) {
			return rep, err
		}
		rep, found, err := a.replay(ctx, key, id, fp)
		if found || err != nil || attempt > 0 {
			return rep, err
		}
		// The record expired between the two statements: run again.
	}
}

// replay reads a committed record: the first answer for the same request,
// a 422 for another.
func (a *TenantAdmin) replay(ctx context.Context, key string, id []byte, fp [32]byte) (*reply, bool, error) {
	var storedFP, sealed []byte
	err := a.pool.QueryRow(ctx, `SELECT fingerprint, response FROM admin_idempotency WHERE id = $1 AND expires_at > now()`, id).
		Scan(&storedFP, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !bytes.Equal(storedFP, fp[:]) {
		return nil, true, &apiError{status: http.StatusUnprocessableEntity, field: idempotencyHeader,
			msg: "this Idempotency-Key was already used for a different request (another path or body): use a new key"}
	}
	rep, err := a.open(key, id, sealed)
	if err != nil {
		return nil, true, err
	}
	return rep, true, nil
}

// checkIdempotencyKey accepts 1-255 visible ASCII characters.
func checkIdempotencyKey(key string) error {
	ok := len(key) <= maxIdempotencyKeyLen
	for i := 0; ok && i < len(key); i++ {
		ok = key[i] > ' ' && key[i] < 0x7f
	}
	if !ok {
		return badField(idempotencyHeader, "Idempotency-Key must be 1-%d visible ASCII characters, such as a UUID", maxIdempotencyKeyLen)
	}
	return nil
}

// idempotencyID finds a record: a SHA-256 of the key, so the key itself is
// not stored. The token is left out on purpose: after the token changes, a
// retry finds its record and, unable to open it, is refused (409) rather
// than run a second time.
func (a *TenantAdmin) idempotencyID(key string) []byte {
	sum := sha256.Sum256([]byte("tenantgate-idempotency-v1\x00" + key))
	return sum[:]
}

// fingerprint identifies a request: method, path and body, the body
// canonical (members sorted, whitespace dropped), so that a retry that
// spells the same JSON differently is the same request.
func fingerprint(c *call) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", c.r.Method, c.r.URL.Path)
	body := c.body
	var v any
	dec := json.NewDecoder(bytes.NewReader(c.body))
	dec.UseNumber()
	if dec.Decode(&v) == nil {
		if canon, err := json.Marshal(v); err == nil {
			body = canon
		}
	}
	h.Write(body)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// aead is the record's cipher for one Idempotency-Key.
func (a *TenantAdmin) aead(key string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, []byte(a.token), []byte("tenantgate admin idempotency v1"), key, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func (a *TenantAdmin) seal(key string, id []byte, rep *reply) ([]byte, error) {
	plain, err := json.Marshal(storedReply{Status: rep.status, Location: rep.location, Body: rep.body, OrgID: rep.orgID, KeyID: rep.keyID})
	if err != nil {
		return nil, err
	}
	aead, err := a.aead(key)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nil, plain, id), nil
}

func (a *TenantAdmin) open(key string, id, sealed []byte) (*reply, error) {
	aead, err := a.aead(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, nil, sealed, id)
	if err != nil {
		// Sealed under another token (the token changed since): the
		// first answer cannot be given again.
		return nil, &apiError{status: http.StatusConflict, field: idempotencyHeader,
			msg: "this Idempotency-Key was used with another admin token; its first answer cannot be read: use a new key"}
	}
	var s storedReply
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("decoding an idempotency record: %w", err)
	}
	return &reply{status: s.Status, location: s.Location, body: s.Body, orgID: s.OrgID, keyID: s.KeyID, replayed: true}, nil
}

// sweepIdempotency deletes expired records, at most once a minute per
// handler; a failure only leaves them for the next sweep.
func (a *TenantAdmin) sweepIdempotency(ctx context.Context) {
	now := time.Now().Unix()
	last := a.sweptAt.Load()
	if now-last < int64(sweepEvery/time.Second) || !a.sweptAt.CompareAndSwap(last, now) {
		return
	}
	if _, err := a.pool.Exec(ctx, `DELETE FROM admin_idempotency WHERE expires_at <= now()`); err != nil {
		a.logger.Debug("deleting expired idempotency records", zap.Error(err))
	}
}
