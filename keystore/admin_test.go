package keystore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// adminOnPool returns the admin operations on a pool of a fresh, migrated
// database (as an admin API would use them), and a connection to inspect it.
func adminOnPool(t *testing.T) (*Admin, string) {
	t.Helper()
	dsn := testenv.MigratedDatabase(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return NewAdmin(pool), dsn
}

func ptr[T any](v T) *T { return &v }

func TestAdminOrganizationLifecycle(t *testing.T) {
	a, _ := adminOnPool(t)
	ctx := context.Background()
	o, err := a.CreateOrg(ctx, OrgInput{Name: "  Acme  ", Plan: "premium", Limits: Limits{PerMinute: ptr[int64](500), Burst: ptr[int64](0)}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Name != "Acme" || o.Plan != "premium" || *o.PerMinute != 500 || o.PerDay != nil || *o.Burst != 0 || o.Disabled != nil {
		t.Fatalf("created %+v", o)
	}
	got, err := a.GetOrg(ctx, strings.ToUpper(o.ID)) // any UUID spelling
	if err != nil || got.ID != o.ID || got.Name != "Acme" {
		t.Fatalf("GetOrg = %+v, %v", got, err)
	}

	renamed, err := a.UpdateOrg(ctx, o.ID, OrgUpdate{Name: ptr("Acme Corp"), Plan: ptr("enterprise")})
	if err != nil || renamed.Name != "Acme Corp" || renamed.Plan != "enterprise" || *renamed.PerMinute != 500 {
		t.Fatalf("UpdateOrg name and plan: %+v, %v (limits must stay)", renamed, err)
	}
	relimited, err := a.UpdateOrg(ctx, o.ID, OrgUpdate{Limits: &Limits{PerDay: ptr[int64](10)}})
	if err != nil || relimited.PerMinute != nil || relimited.Burst != nil || *relimited.PerDay != 10 || relimited.Plan != "enterprise" {
		t.Fatalf("UpdateOrg limits: %+v, %v (limits replaced as a whole, plan kept)", relimited, err)
	}
	same, err := a.UpdateOrg(ctx, o.ID, OrgUpdate{})
	if err != nil || same.Name != "Acme Corp" {
		t.Fatalf("empty UpdateOrg: %+v, %v", same, err)
	}

	disabled, err := a.DisableOrg(ctx, o.ID)
	if err != nil || disabled.Disabled == nil {
		t.Fatalf("DisableOrg: %+v, %v", disabled, err)
	}
	again, err := a.DisableOrg(ctx, o.ID)
	if err != nil || !again.Disabled.Equal(*disabled.Disabled) {
		t.Errorf("disabling twice moved disabled_at: %v then %v (%v)", disabled.Disabled, again.Disabled, err)
	}
	if _, err := a.CreateKey(ctx, KeyInput{OrgID: o.ID, Name: "k"}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("key for a disabled organization: %v, want ErrConflict saying disabled", err)
	}
	enabled, err := a.EnableOrg(ctx, o.ID)
	if err != nil || enabled.Disabled != nil {
		t.Fatalf("EnableOrg: %+v, %v", enabled, err)
	}
	if _, err := a.EnableOrg(ctx, o.ID); err != nil {
		t.Errorf("enabling an enabled organization: %v", err)
	}
	if _, err := a.CreateKey(ctx, KeyInput{OrgID: o.ID, Name: "k"}); err != nil {
		t.Errorf("key for a re-enabled organization: %v", err)
	}
}

func TestAdminErrorsAreTypedAndChangeNothing(t *testing.T) {
	a, dsn := adminOnPool(t)
	ctx := context.Background()
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	key := newTestKey(t, conn, org.ID, 0)
	unknown := "0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70"
	snapshot := func() string {
		var s string
		if err := conn.QueryRow(ctx, `SELECT (SELECT string_agg(row_to_json(o)::text, ',' ORDER BY id) FROM organizations o) ||
			(SELECT string_agg(row_to_json(k)::text, ',' ORDER BY id) FROM api_keys k)`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snapshot()
	for _, c := range []struct {
		name string
		op   func() error
		want error
		msg  string
	}{
		{"GetOrg unknown", func() error { _, err := a.GetOrg(ctx, unknown); return err }, ErrNotFound, "unknown organization"},
		{"GetOrg malformed", func() error { _, err := a.GetOrg(ctx, key.Key); return err }, ErrInvalid, "malformed organization ID"},
		{"GetKey unknown", func() error { _, err := a.GetKey(ctx, unknown); return err }, ErrNotFound, "unknown API key"},
		{"UpdateOrg unknown", func() error { _, err := a.UpdateOrg(ctx, unknown, OrgUpdate{Plan: ptr("premium")}); return err }, ErrNotFound, "unknown organization"},
		{"UpdateOrg bad plan", func() error { _, err := a.UpdateOrg(ctx, org.ID, OrgUpdate{Plan: ptr("no spaces")}); return err }, ErrInvalid, "plan"},
		{"UpdateOrg bad limit", func() error {
			_, err := a.UpdateOrg(ctx, org.ID, OrgUpdate{Limits: &Limits{PerMinute: ptr[int64](0)}})
			return err
		}, ErrInvalid, "rate_limit_per_minute must be at least 1"},
		{"CreateOrg empty name", func() error { _, err := a.CreateOrg(ctx, OrgInput{Name: " ", Plan: "basic"}); return err }, ErrInvalid, "name"},
		{"CreateOrg negative burst", func() error {
			_, err := a.CreateOrg(ctx, OrgInput{Name: "x", Plan: "basic", Limits: Limits{Burst: ptr[int64](-1)}})
			return err
		}, ErrInvalid, "burst"},
		{"CreateKey unknown org", func() error { _, err := a.CreateKey(ctx, KeyInput{OrgID: unknown, Name: "x"}); return err }, ErrNotFound, "unknown organization"},
		{"CreateKey control char", func() error { _, err := a.CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "a\nb"}); return err }, ErrInvalid, "name"},
		{"CreateKey negative expiry", func() error {
			_, err := a.CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "x", ExpiresIn: -time.Hour})
			return err
		}, ErrInvalid, "expires_in"},
		{"RevokeKey unknown", func() error { _, err := a.RevokeKey(ctx, unknown); return err }, ErrNotFound, "unknown API key"},
		{"RotateKey unknown", func() error { _, err := a.RotateKey(ctx, unknown, RotateOptions{}); return err }, ErrNotFound, "unknown API key"},
		{"RotateKey negative grace", func() error { _, err := a.RotateKey(ctx, key.ID, RotateOptions{Grace: -time.Minute}); return err }, ErrInvalid, "grace"},
		{"ListKeys unknown org", func() error { _, _, err := a.ListKeys(ctx, unknown, "", 0); return err }, ErrNotFound, "unknown organization"},
		{"ListOrgs bad cursor", func() error { _, _, err := a.ListOrgs(ctx, "not-a-cursor", 0); return err }, ErrInvalid, "cursor"},
		{"ListOrgs page too big", func() error { _, _, err := a.ListOrgs(ctx, "", MaxPageSize+1); return err }, ErrInvalid, "page size"},
		{"DisableOrg unknown", func() error { _, err := a.DisableOrg(ctx, unknown); return err }, ErrNotFound, "unknown organization"},
		{"EnableOrg unknown", func() error { _, err := a.EnableOrg(ctx, unknown); return err }, ErrNotFound, "unknown organization"},
	} {
		err := c.op()
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want %v containing %q", c.name, err, c.want, c.msg)
		}
		if err != nil && strings.Contains(err.Error(), key.Key) {
			t.Errorf("%s: the error echoes a key", c.name)
		}
	}
	if after := snapshot(); after != before {
		t.Errorf("failed operations changed the database")
	}
}

func TestAdminSchemaMissingIsTyped(t *testing.T) {
	conn := testenv.Connect(t, testenv.FreshDatabase(t))
	_, _, err := NewAdmin(conn).ListOrgs(context.Background(), "", 0)
	if !errors.Is(err, ErrSchemaMissing) || !strings.Contains(err.Error(), "caddy tenant migrate") {
		t.Errorf("listing an unmigrated database: %v, want ErrSchemaMissing naming `caddy tenant migrate`", err)
	}
}

func TestAdminListsPageByCursor(t *testing.T) {
	a, _ := adminOnPool(t)
	ctx := context.Background()
	var orgIDs []string
	for range 7 {
		o, err := a.CreateOrg(ctx, OrgInput{Name: "org", Plan: "basic"})
		if err != nil {
			t.Fatal(err)
		}
		orgIDs = append(orgIDs, o.ID)
	}
	var keyIDs []string
	for range 5 {
		k, err := a.CreateKey(ctx, KeyInput{OrgID: orgIDs[0], Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		keyIDs = append(keyIDs, k.ID)
	}

	var seen []string
	cursor, pages := "", 0
	for {
		page, next, err := a.ListOrgs(ctx, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page {
			seen = append(seen, o.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 3 || strings.Join(seen, ",") != strings.Join(orgIDs, ",") {
		t.Errorf("paging 7 organizations by 3: %d pages, %v; want 3 pages, %v", pages, seen, orgIDs)
	}
	if all, next, err := a.ListOrgs(ctx, "", 0); err != nil || len(all) != 7 || next != "" {
		t.Errorf("default page: %d organizations, next %q, %v", len(all), next, err)
	}

	first, next, err := a.ListKeys(ctx, orgIDs[0], "", 4)
	if err != nil || len(first) != 4 || next == "" {
		t.Fatalf("first page of keys: %d, next %q, %v", len(first), next, err)
	}
	rest, last, err := a.ListKeys(ctx, orgIDs[0], next, 4)
	if err != nil || len(rest) != 1 || rest[0].ID != keyIDs[4] || last != "" {
		t.Errorf("second page of keys: %+v, next %q, %v; want only %s", rest, last, err, keyIDs[4])
	}
	if other, _, err := a.ListKeys(ctx, orgIDs[1], "", 0); err != nil || len(other) != 0 {
		t.Errorf("keys of an organization without keys: %v, %v", other, err)
	}
}

func TestAdminRotateKeyOnce(t *testing.T) {
	a, _ := adminOnPool(t)
	ctx := context.Background()
	org, err := a.CreateOrg(ctx, OrgInput{Name: "Acme", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "ci", Plan: ptr("premium"), ExpiresIn: 720 * time.Hour, Test: true})
	if err != nil {
		t.Fatal(err)
	}

	rot, err := a.RotateKey(ctx, old.ID, RotateOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	fresh := rot.NewAPIKey
	if !WellFormedKey(fresh.Key) || !strings.HasPrefix(fresh.Key, TestKeyPrefix) || fresh.ID == old.ID ||
		fresh.Name != "ci" || fresh.OrgID != org.ID || *fresh.Plan != "premium" {
		t.Errorf("replacement %+v: want a test key with the old one's name, organization and plan", fresh)
	}
	if fresh.Expires == nil || !fresh.Expires.Equal(*old.Expires) {
		t.Errorf("replacement expires %v, want the old key's expiry %v", fresh.Expires, old.Expires)
	}
	if rot.Replaces.ReplacedBy == nil || *rot.Replaces.ReplacedBy != fresh.ID {
		t.Errorf("old key's replaced_by = %v, want %s", rot.Replaces.ReplacedBy, fresh.ID)
	}
	if d := time.Until(*rot.Replaces.Expires); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("old key expires in %s, want the 1h grace", d)
	}

	// Twice: refused, naming the replacement; nothing new is created.
	_, err = a.RotateKey(ctx, old.ID, RotateOptions{Grace: time.Hour})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), fresh.ID) {
		t.Errorf("second rotation: %v, want ErrConflict naming %s", err, fresh.ID)
	}
	keys, _, err := a.ListKeys(ctx, org.ID, "", 0)
	if err != nil || len(keys) != 2 {
		t.Errorf("after rotating twice the organization has %d keys (%v), want 2", len(keys), err)
	}

	// The replacement can be rotated in turn; expires_in overrides the
	// inherited expiry; a key that never expired gives one that never does.
	next, err := a.RotateKey(ctx, fresh.ID, RotateOptions{ExpiresIn: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*next.Expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("replacement with expires_in 24h expires in %s", d)
	}
	if d := time.Until(*next.Replaces.Expires); d > time.Minute {
		t.Errorf("rotation with no grace: old key expires in %s, want now", d)
	}
	forever, err := a.CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "forever"})
	if err != nil {
		t.Fatal(err)
	}
	if rot, err := a.RotateKey(ctx, forever.ID, RotateOptions{Grace: time.Hour}); err != nil || rot.Expires != nil {
		t.Errorf("replacement of a key without expiry expires %v (%v), want never", rot.Expires, err)
	}

	revoked, err := a.CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(ctx, revoked.ID, RotateOptions{}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("rotating a revoked key: %v, want ErrConflict saying revoked", err)
	}
	got, err := a.GetKey(ctx, revoked.ID)
	if err != nil || got.Status != "revoked" || got.Revoked == nil {
		t.Errorf("GetKey of the revoked key: %+v, %v", got, err)
	}
}
