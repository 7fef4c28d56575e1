package gateway

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// router finds the session a request is for. It is the one place that
// knows the routing modes: the proxy, the session-token check and the
// activity count all ask it.
type router struct {
	mode messages.Routing
	// domain is the session domain in lower case, with any port: session
	// hosts are "<id>." + domain.
	domain string
	// domainHasPort says whether Host headers are matched with their port.
	domainHasPort bool
}

func newRouter(mode messages.Routing, domain string) router {
	domain = strings.ToLower(strings.Trim(domain, "."))
	_, _, err := net.SplitHostPort(domain)
	return router{mode: mode, domain: domain, domainHasPort: err == nil}
}

// addressed is what a proxied request is for.
type addressed struct {
	id string
	// prefix is "/p/<id>" under the path modes and "" under subdomain
	// routing; it is a slice of the request's path, so finding it
	// allocates nothing.
	prefix string
	// rest is the path after the prefix: "" for "/p/<id>" with no slash.
	rest string
}

// sessionHost returns the session id of a Host header under subdomain
// routing, or false for any other host (the API's, say).
func (rt router) sessionHost(host string) (string, bool) {
	if rt.mode != messages.RoutingSubdomain || rt.domain == "" {
		return "", false
	}
	if !rt.domainHasPort {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	if len(host) <= len(rt.domain)+1 || host[len(host)-len(rt.domain)-1] != '.' ||
		!strings.EqualFold(host[len(host)-len(rt.domain):], rt.domain) {
		return "", false
	}
	label := host[:len(host)-len(rt.domain)-1]
	if strings.IndexByte(label, '.') >= 0 {
		return "", false
	}
	return strings.ToLower(label), true
}

// address finds the session r is for: by Host under subdomain routing,
// by the /p/<id>/ path otherwise.
func (rt router) address(r *http.Request) (addressed, bool) {
	return rt.addressOf(r.Host, r.URL.Path)
}

// addressOf is address for a Host header and a decoded path, which is
// all the fast path has of a request.
func (rt router) addressOf(host, path string) (addressed, bool) {
	if rt.mode == messages.RoutingSubdomain {
		id, ok := rt.sessionHost(host)
		return addressed{id: id, rest: path}, ok
	}
	after, found := strings.CutPrefix(path, "/p/")
	if !found {
		return addressed{}, false
	}
	a := addressed{id: after}
	if i := strings.IndexByte(after, '/'); i >= 0 {
		a.id, a.rest = after[:i], after[i:]
	}
	a.prefix = path[:3+len(a.id)]
	return a, true
}

// stripPrefix takes the session's /p/<id> prefix off r's path, for a
// session routed by path whatever the installation's mode.
func stripPrefix(r *http.Request, a addressed) {
	r.URL.Path = a.rest
	if r.URL.RawPath != "" {
		r.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, a.prefix)
	}
}

// cookiePath is the Path of the session-token cookie: the session's own
// prefix, or the whole of its host under subdomain routing, where the
// cookie is host-only and so never leaves the session's origin.
func (a addressed) cookiePath() string {
	if a.prefix == "" {
		return "/"
	}
	return a.prefix + "/"
}

// rewriteResponse changes what an app sends back under path routing, as
// nginx's proxy_redirect and proxy_cookie_path do: a redirect to an
// absolute path, or to an absolute URL on the app's own address, stays in
// the session, and cookies set for "/" are scoped to the session's prefix,
// so that two sessions on one host never share them.
func rewriteResponse(h http.Header, prefix, upstream, publicHost string) {
	if loc := h.Get("Location"); loc != "" {
		if fixed, ok := rewriteLocation(loc, prefix, upstream, publicHost); ok {
			h.Set("Location", fixed)
		}
	}
	cookies := h["Set-Cookie"]
	for i, c := range cookies {
		cookies[i] = rewriteCookiePath(c, prefix)
	}
}

// rewriteLocation maps a Location onto the session's prefix. It reports
// false for one that must stay: relative paths, which the browser resolves
// inside the session already, and URLs of other sites.
func rewriteLocation(loc, prefix, upstream, publicHost string) (string, bool) {
	if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") {
		if underPrefix(loc, prefix) {
			return "", false
		}
		return prefix + loc, true
	}
	u, err := url.Parse(loc)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "") {
		return "", false
	}
	if !strings.EqualFold(u.Host, upstream) && !strings.EqualFold(u.Host, publicHost) {
		return "", false
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if underPrefix(path, prefix) {
		return "", false
	}
	out := prefix + path
	if u.RawQuery != "" || u.ForceQuery {
		out += "?" + u.RawQuery
	}
	if u.Fragment != "" {
		out += "#" + u.EscapedFragment()
	}
	return out, true
}

func underPrefix(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// rewriteCookiePath gives a Set-Cookie with no Path, or one outside the
// session, the session's prefix, keeping every other byte as the app sent
// it.
func rewriteCookiePath(c, prefix string) string {
	parts := strings.Split(c, ";")
	for i := 1; i < len(parts); i++ {
		name, value, _ := strings.Cut(strings.TrimSpace(parts[i]), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "path") {
			continue
		}
		value = strings.TrimSpace(value)
		if !strings.HasPrefix(value, "/") {
			value = "/"
		}
		if underPrefix(value, prefix) {
			return c
		}
		parts[i] = " Path=" + prefix + value
		return strings.Join(parts, ";")
	}
	return c + "; Path=" + prefix + "/"
}

// proxyPathUnused answers /p/ paths under subdomain routing, where each
// session has its own host and the API's host serves none of them.
func (g *Gateway) proxyPathUnused(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound,
		"sessions are routed by host here: <session id>.%s", g.router.domain))
}
