package messages

import (
	"fmt"
	"net/url"
	"strings"
)

// Routing says how a session's public URL maps onto its app's paths.
type Routing string

// The routing modes, as SPAWNER_ROUTING names them.
const (
	// RoutingPath serves <public>/p/<id>/x to the app as /x, rewriting the
	// redirects and cookie paths the app sends back. It is the default.
	RoutingPath Routing = "path"
	// RoutingPathKeep serves <public>/p/<id>/x to the app as /p/<id>/x,
	// for apps with a base-URL setting.
	RoutingPathKeep Routing = "path-keep"
	// RoutingSubdomain serves <scheme>://<id>.<session domain>/x to the
	// app as /x; each session is then its own browser origin.
	RoutingSubdomain Routing = "subdomain"
)

// ParseRouting checks a routing mode's name; empty means RoutingPath.
func ParseRouting(s string) (Routing, error) {
	switch r := Routing(strings.TrimSpace(s)); r {
	case "":
		return RoutingPath, nil
	case RoutingPath, RoutingPathKeep, RoutingSubdomain:
		return r, nil
	}
	return "", fmt.Errorf("routing %q: want path, path-keep or subdomain", s)
}

// ProxyPrefix is the path prefix of a session under path routing, without
// its trailing slash: "/p/<id>".
func ProxyPrefix(id string) string { return "/p/" + id }

// BasePath is the path under which the app sees its own pages: "/p/<id>/"
// with RoutingPathKeep, "/" otherwise. Apps get it as SPAWNER_BASE_PATH.
func (r Routing) BasePath(id string) string {
	if r == RoutingPathKeep {
		return ProxyPrefix(id) + "/"
	}
	return "/"
}

// SessionURL is the URL a browser opens for session id: the public URL
// with /p/<id>/ under the path modes, or <scheme>://<id>.<domain>/ under
// RoutingSubdomain, the scheme taken from publicURL.
func (r Routing) SessionURL(publicURL, sessionDomain, id string) string {
	if r == RoutingSubdomain {
		scheme := "http"
		if u, err := url.Parse(publicURL); err == nil && u.Scheme != "" {
			scheme = u.Scheme
		}
		return scheme + "://" + id + "." + strings.Trim(sessionDomain, ".") + "/"
	}
	return strings.TrimRight(publicURL, "/") + ProxyPrefix(id) + "/"
}

// StatusSources says where a session's activity comes from, as
// SPAWNER_STATUS_SOURCE names it: "app", "sidecar" or "proxy", or one of
// the first two combined with the third ("app,proxy"). A session is idle
// only when every source says so.
type StatusSources struct {
	// App polls the app's own /status.
	App bool
	// Sidecar polls a sidecar that counts the app's TCP connections.
	Sidecar bool
	// Proxy counts the gateway's requests, streams and upgraded connections.
	Proxy bool
}

// ParseStatusSources reads a comma-separated list of sources; empty means
// "app".
func ParseStatusSources(s string) (StatusSources, error) {
	var src StatusSources
	if strings.TrimSpace(s) == "" {
		return StatusSources{App: true}, nil
	}
	for name := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(name) {
		case "app":
			src.App = true
		case "sidecar":
			src.Sidecar = true
		case "proxy":
			src.Proxy = true
		default:
			return StatusSources{}, fmt.Errorf("status source %q: want app, sidecar or proxy, or a comma-separated mix such as app,proxy", s)
		}
	}
	if src.App && src.Sidecar {
		return StatusSources{}, fmt.Errorf("status source %q: app and sidecar both poll a /status; pick one", s)
	}
	return src, nil
}

// Polled reports whether the prober polls a /status for these sources.
func (s StatusSources) Polled() bool { return s.App || s.Sidecar }

// String is the canonical comma-separated form.
func (s StatusSources) String() string {
	var parts []string
	if s.App {
		parts = append(parts, "app")
	}
	if s.Sidecar {
		parts = append(parts, "sidecar")
	}
	if s.Proxy {
		parts = append(parts, "proxy")
	}
	return strings.Join(parts, ",")
}
