package gateway

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// webFS holds the dashboard: plain HTML, CSS and JavaScript, served as
// they are, with no build step and nothing loaded from elsewhere.
//
//go:embed web
var webFS embed.FS

// dashboardCSP lets the page load only its own files and talk only to
// this gateway, so session data shown in it cannot pull in anything else.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// handleDashboard serves the dashboard's page at /.
func handleDashboard(w http.ResponseWriter, _ *http.Request) {
	page, err := webFS.ReadFile("web/index.html")
	if err != nil {
		http.Error(w, "dashboard missing from this build", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(page)
}

// handleAssets serves the dashboard's scripts, styles and icon.
func handleAssets(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") || strings.HasSuffix(r.URL.Path, "/index.html") {
		// No directory listings, and the page lives at / only.
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no asset %s", r.URL.Path))
		return
	}
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		http.Error(w, "dashboard missing from this build", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-cache")
	http.StripPrefix("/assets/", http.FileServerFS(sub)).ServeHTTP(w, r)
}
