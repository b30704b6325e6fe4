package caddyauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

// failingStore answers every lookup with err.
type failingStore struct{ err error }

func (s failingStore) Lookup(context.Context, keystore.KeyHash) (*tenant.Identity, error) {
	return nil, s.err
}

func TestShedLookupsAreNotLoggedPerRequest(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		wantWarn bool
	}{
		{"shed under load", keystore.ErrBusy, false},
		{"PostgreSQL down", keystore.ErrStoreUnavailable, true},
	} {
		core, logs := observer.New(zapcore.WarnLevel)
		a := &TenantAuth{dynamic: failingStore{c.err}, logger: zap.New(core)}
		key, err := keystore.GenerateKey(false)
		if err != nil {
			t.Fatal(err)
		}
		r := caddyhttp.PrepareRequest(httptest.NewRequest(http.MethodGet, "http://gateway/", nil), caddy.NewReplacer(), nil, nil)
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		_ = a.ServeHTTP(w, r, nopHandler{})
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", c.name, w.Code)
		}
		if got := logs.Len() > 0; got != c.wantWarn {
			t.Errorf("%s: logged a warning: %v, want %v", c.name, got, c.wantWarn)
		}
	}
}
