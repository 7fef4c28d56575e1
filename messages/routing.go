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
