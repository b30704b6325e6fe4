package caddyadmin

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/keystore"
)

// route is one operation of the API. The table below is the one source of
// the routes: the mux is built from it, and the tests check it against the
// OpenAPI document.
type route struct {
	method, pattern string
	// operationID names the operation in openapi.json.
	operationID string
	// statuses are every status the operation answers.
	statuses []int
	// action names a mutating operation in the audit log ("" for reads).
	action string
	// db: the operation needs the key database.
	db bool
	// body: the operation reads a JSON body.
	body bool
	// serializable runs the operation in one serializable transaction.
	serializable bool
	run          func(a *TenantAdmin, c *call) (*reply, error)
}

// Status sets shared by routes.
var (
	readStatuses   = []int{401, 404, 500, 503}
	listStatuses   = []int{400, 401, 500, 503}
	createStatuses = []int{400, 401, 404, 409, 413, 422, 500, 503}
)

func statuses(ok int, more []int) []int {
	s := append([]int{ok}, more...)
	slices.Sort(s)
	return slices.Compact(s)
}

// routes is the API.
var routes = []route{
	{method: "GET", pattern: openAPIPath, operationID: "getOpenAPI", statuses: []int{200}, run: (*TenantAdmin).openAPI},

	{method: "GET", pattern: "/v1/orgs", operationID: "listOrgs", statuses: statuses(200, listStatuses), db: true, run: (*TenantAdmin).listOrgs},
	{method: "POST", pattern: "/v1/orgs", operationID: "createOrg", statuses: statuses(201, createStatuses), db: true, body: true,
		action: "org.create", run: (*TenantAdmin).createOrg},
	{method: "GET", pattern: "/v1/orgs/{id}", operationID: "getOrg", statuses: statuses(200, readStatuses), db: true, run: (*TenantAdmin).getOrg},
	{method: "PATCH", pattern: "/v1/orgs/{id}", operationID: "updateOrg", statuses: statuses(200, createStatuses), db: true, body: true,
		serializable: true, action: "org.update", run: (*TenantAdmin).updateOrg},

	{method: "GET", pattern: "/v1/orgs/{id}/keys", operationID: "listKeys", statuses: statuses(200, append(listStatuses, 404)), db: true, run: (*TenantAdmin).listKeys},
	{method: "POST", pattern: "/v1/orgs/{id}/keys", operationID: "createKey", statuses: statuses(201, createStatuses), db: true, body: true,
		action: "key.create", run: (*TenantAdmin).createKey},
	{method: "GET", pattern: "/v1/keys/{id}", operationID: "getKey", statuses: statuses(200, readStatuses), db: true, run: (*TenantAdmin).getKey},
	{method: "POST", pattern: "/v1/keys/{id}/revoke", operationID: "revokeKey", statuses: statuses(200, createStatuses), db: true, body: true,
		action: "key.revoke", run: (*TenantAdmin).revokeKey},
	{method: "POST", pattern: "/v1/keys/{id}/rotate", operationID: "rotateKey", statuses: statuses(201, createStatuses), db: true, body: true,
		action: "key.rotate", run: (*TenantAdmin).rotateKey},

	{method: "GET", pattern: "/v1/orgs/{id}/usage", operationID: "getOrgUsage", statuses: statuses(200, []int{400, 401, 404, 406, 500, 503}), run: (*TenantAdmin).orgUsage},
	{method: "GET", pattern: "/v1/orgs/{id}/limits", operationID: "getOrgLimits", statuses: statuses(200, append(readStatuses, 409)), db: true, run: (*TenantAdmin).orgLimits},
}

// newMux routes the table. A path the table knows, asked with another
// method, is a 405 naming the allowed ones; an unknown path is the
// dashboard's (its static files, else a 404) — every error in the
// envelope.
func newMux(a *TenantAdmin) *http.ServeMux {
	mux := http.NewServeMux()
	allowed := make(map[string][]string)
	var paths []string
	for i := range routes {
		rt := &routes[i]
		mux.HandleFunc(rt.method+" "+rt.pattern, a.serve(rt))
		if allowed[rt.pattern] == nil {
			paths = append(paths, rt.pattern)
		}
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
	}
	for _, p := range paths {
		allow := strings.Join(allowed[p], ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, r, &apiError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed here: use %s", r.Method, allow)})
		})
	}
	mux.Handle("/", dashboardHandler())
	return mux
}

// call is one request to an operation.
type call struct {
	r    *http.Request
	body []byte // compacted JSON ("" when empty)
	// db runs the store operations: the pool, or the request's
	// transaction (idempotent POSTs, PATCH).
	db keystore.DB
}

func (c *call) admin() *keystore.Admin { return keystore.NewAdmin(c.db) }

// reply is an operation's answer.
type reply struct {
	status   int
	body     []byte // JSON
	location string
	// raw is a non-JSON body with its content type (CSV).
	raw         []byte
	contentType string
	// orgID and keyID name what a change touched, for the audit log.
	orgID, keyID string
	replayed     bool
}

// jsonReply encodes v as a reply.
func jsonReply(status int, v any) (*reply, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &reply{status: status, body: body}, nil
}

// serve runs one operation: database check, body, idempotency or
// transaction, the answer, and the audit line of a change.
func (a *TenantAdmin) serve(rt *route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rep, err := a.execute(rt, w, r)
		var e *apiError
		if err != nil {
			e = storeError(err)
		}
		if rt.action != "" {
			a.logChange(rt, r, rep, e)
		}
		if err != nil {
			if e.status >= 500 {
				a.logger.Error("admin API request failed", zap.String("request_id", requestID(r)),
					zap.String("operation", rt.operationID), zap.Error(err))
			}
			writeError(w, r, e)
			return
		}
		if rep.location != "" {
			w.Header().Set("Location", mountPrefix(r)+rep.location)
		}
		if rep.replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		if rep.raw != nil {
			w.Header().Set("Content-Type", rep.contentType)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(rep.status)
			_, _ = w.Write(rep.raw)
			return
		}
		writeRaw(w, rep.status, rep.body)
	}
}

func (a *TenantAdmin) execute(rt *route, w http.ResponseWriter, r *http.Request) (*reply, error) {
	if rt.db && a.pool == nil {
		return nil, errNoDatabase
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	c := &call{r: r}
	if a.pool != nil {
		c.db = a.pool
	}
	if rt.body {
		var err error
		if c.body, err = readBody(w, r); err != nil {
			return nil, err
		}
	}
	if key := r.Header.Get(idempotencyHeader); r.Method == http.MethodPost && key != "" && rt.db {
		return a.idempotent(ctx, c, key, func(c *call) (*reply, error) { return rt.run(a, c) })
	}
	if rt.serializable {
		var rep *reply
		err := pgx.BeginTxFunc(ctx, a.pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
			c.db = tx
			var err error
			rep, err = rt.run(a, c)
			return err
		})
		return rep, err
	}
	return rt.run(a, c)
}

// logChange writes the audit line of a change: who (the token's ID or the
// remote address), what, on which organization or key, and the outcome (e
// when it failed).
// Never a key nor the token.
func (a *TenantAdmin) logChange(rt *route, r *http.Request, rep *reply, e *apiError) {
	fields := []zap.Field{
		zap.String("action", rt.action),
		zap.String("actor", a.actor(r)),
		zap.String("remote_addr", r.RemoteAddr),
		zap.String("request_id", requestID(r)),
	}
	orgID, keyID := "", ""
	if strings.HasPrefix(rt.pattern, "/v1/orgs/{id}") {
		orgID = r.PathValue("id")
	} else if strings.HasPrefix(rt.pattern, "/v1/keys/{id}") {
		keyID = r.PathValue("id")
	}
	status := 0
	if rep != nil {
		status = rep.status
		orgID, keyID = cmp.Or(rep.orgID, orgID), cmp.Or(rep.keyID, keyID)
		if rep.replayed {
			fields = append(fields, zap.Bool("idempotent_replay", true))
		}
	}
	if e != nil {
		status = e.status
		fields = append(fields, zap.String("error", e.msg))
	}
	if _, perr := uuid.Parse(orgID); perr == nil {
		fields = append(fields, zap.String("organization_id", orgID))
	}
	if _, perr := uuid.Parse(keyID); perr == nil {
		fields = append(fields, zap.String("key_id", keyID))
	}
	fields = append(fields, zap.Int("status", status))
	a.audit.Info("admin change", fields...)
}

// mountPrefix is the path prefix the handler is mounted under (what
// handle_path stripped), so that Location headers and the dashboard's
// links work under it.
func mountPrefix(r *http.Request) string {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil {
		return ""
	}
	if p, ok := strings.CutSuffix(orig.URL.Path, r.URL.Path); ok {
		return p
	}
	return ""
}

// pathID reads the {id} path value: a malformed ID names nothing that
// exists, so it is a 404 (without echoing the value: it may be a key
// pasted by mistake).
func pathID(r *http.Request, what string) (string, error) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return "", &apiError{status: http.StatusNotFound, msg: fmt.Sprintf("unknown %s: IDs are UUIDs such as 0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", what)}
	}
	return id.String(), nil
}

// openAPIPath serves the API's OpenAPI 3.1 description, without a token:
// it describes the API and holds no data.
const openAPIPath = "/v1/openapi.json"

// openAPIDocument describes every route of the table in routes.go; a test
// checks the two against each other and validates the document.
//
//go:embed openapi.json
var openAPIDocument []byte

func (a *TenantAdmin) openAPI(*call) (*reply, error) {
	return &reply{status: http.StatusOK, raw: openAPIDocument, contentType: "application/json"}, nil
}
