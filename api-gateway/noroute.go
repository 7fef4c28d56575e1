package gateway

import (
	"net/http"
	"strings"
	"sync"

	"github.com/spawnerhq/spawner/messages"
)

// probeMethods are the methods tried to tell a wrong method from a wrong path.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

// handleNoRoute answers what no route took. The catch-all "/" matches every
// method, so the mux never answers 405 itself: GET /init got 404 "no route".
// A known path with a wrong method now gets 405 and an Allow header.
func (g *Gateway) handleNoRoute(w http.ResponseWriter, r *http.Request) {
	if allow := g.allowedMethods(r); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, messages.Errorf(messages.CodeBadRequest,
			"%s does not take %s; it takes %s", r.URL.Path, r.Method, strings.Join(allow, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// allowedMethods lists the methods some route other than the catch-all
// serves at r's path.
func (g *Gateway) allowedMethods(r *http.Request) []string {
	g.knownOnce.Do(func() {
		g.known = http.NewServeMux()
		for _, rt := range g.httpRoutes() {
			if rt.pattern != "/" {
				g.known.HandleFunc(rt.pattern, rt.handler)
			}
		}
	})
	var allow []string
	for _, m := range probeMethods {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := g.known.Handler(probe); pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}

// knownRoutes is embedded in Gateway for allowedMethods.
type knownRoutes struct {
	knownOnce sync.Once
	known     *http.ServeMux
}
