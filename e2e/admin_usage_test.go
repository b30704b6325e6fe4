package e2e

import (
	"net/http"
	"testing"
)

func testAdminUsage(t *testing.T, c *adminClient, orgID string) {
	r := c.call("GET", "/v1/orgs/"+orgID+"/usage", nil, nil)
	expectStatus(t, r, http.StatusOK)
}
