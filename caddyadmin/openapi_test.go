package caddyadmin

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// TestOpenAPIDocumentValidates validates openapi.json against the OpenAPI
// 3.1 schema with an independent library.
func TestOpenAPIDocumentValidates(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatalf("parsing openapi.json: %v", err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("openapi version %q, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("building the validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.json: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  at %s (line %d): %s", se.FieldPath, se.Line, se.Reason)
			}
		}
	}
}

// TestOpenAPIMatchesRoutes checks the route table, from which the mux is
// built, against the document both ways: every route and each of its
// statuses is documented, and the document describes nothing else.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("building the model: %v", err)
	}
	documented := make(map[string][]int) // "GET /v1/orgs" → statuses
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			key := strings.ToUpper(method) + " " + path
			for code := range op.Responses.Codes.KeysFromOldest() {
				n, err := strconv.Atoi(code)
				if err != nil {
					t.Errorf("%s: response code %q is not a status", key, code)
				}
				documented[key] = append(documented[key], n)
			}
			if op.OperationId == "" {
				t.Errorf("%s: no operationId", key)
			}
		}
	}
	seen := make(map[string]bool)
	for _, rt := range routes {
		key := rt.method + " " + rt.pattern
		seen[key] = true
		got, ok := documented[key]
		if !ok {
			t.Errorf("route %s is not in openapi.json", key)
			continue
		}
		op := model.Model.Paths.PathItems.GetOrZero(rt.pattern).GetOperations().GetOrZero(strings.ToLower(rt.method))
		if op.OperationId != rt.operationID {
			t.Errorf("%s: operationId %q in openapi.json, %q in the route table", key, op.OperationId, rt.operationID)
		}
		for _, s := range rt.statuses {
			if !slices.Contains(got, s) {
				t.Errorf("%s answers %d, which openapi.json does not document", key, s)
			}
		}
		for _, s := range got {
			if !slices.Contains(rt.statuses, s) {
				t.Errorf("%s: openapi.json documents %d, which the route table does not list", key, s)
			}
		}
	}
	for key := range documented {
		if !seen[key] {
			t.Errorf("openapi.json documents %s, which no route serves", key)
		}
	}
}

// TestMuxServesEveryRoute walks the real router: a request for each route
// of the table, with IDs filled in, reaches that route's pattern; another
// method on its path gets a 405 naming the allowed ones.
func TestMuxServesEveryRoute(t *testing.T) {
	a := newTestAdmin(t, "")
	const id = "0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70"
	for _, rt := range routes {
		path := strings.ReplaceAll(rt.pattern, "{id}", id)
		req := httptest.NewRequest(rt.method, path, nil)
		if _, pattern := a.mux.Handler(req); pattern != rt.method+" "+rt.pattern {
			t.Errorf("%s %s reached pattern %q, want %q", rt.method, path, pattern, rt.method+" "+rt.pattern)
		}
		req = httptest.NewRequest(http.MethodDelete, path, nil)
		rec := httptest.NewRecorder()
		a.mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Header().Get("Allow"), rt.method) {
			t.Errorf("DELETE %s: %d, Allow %q; want 405 allowing %s", path, rec.Code, rec.Header().Get("Allow"), rt.method)
		}
	}
}
