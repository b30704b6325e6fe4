package caddyadmin

import (
	_ "embed"
	"net/http"
)

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
