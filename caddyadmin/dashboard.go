package caddyadmin

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The dashboard: static HTML, CSS and JavaScript embedded in the binary,
// with uPlot (dashboard/vendor/, MIT, see its LICENSE and VERSION) for the
// charts. No CDN: it works offline. The page asks for the admin token,
// keeps it in the tab's sessionStorage and sends it as an Authorization
// header to the JSON API; it never puts it in a URL.
//
//go:embed dashboard
var dashboardFiles embed.FS

// dashboardCSP keeps the page to its own files and its own API.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// dashboardHandler serves the dashboard's files (index.html at the root)
// for GET and HEAD; anything else is a 404 in the envelope.
func dashboardHandler() http.Handler {
	files, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		info, err := fs.Stat(files, name)
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || err != nil || info.IsDir() {
			writeError(w, r, &apiError{status: http.StatusNotFound, msg: "not found: the API is under /v1/ (see /v1/openapi.json), the dashboard at /"})
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, files, name)
	})
}
