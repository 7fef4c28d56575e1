package gateway

import (
	"net/http"
	"strings"
)

// forgedHeader reports whether a client-sent request header could pass for
// one the proxy vouches for, and so must not reach an app:
//   - the forwarding headers, which the proxy sets itself from what it saw,
//     and the client-address headers apps commonly trust (X-Real-IP, ...);
//   - any name with an underscore. CGI and WSGI servers turn both
//     X-Forwarded-For and X_Forwarded_For into HTTP_X_FORWARDED_FOR, so an
//     underscore spelling overrides whatever the proxy set. NGINX drops
//     such headers by default (underscores_in_headers off) for this reason.
func forgedHeader(k string) bool {
	if strings.IndexByte(k, '_') >= 0 {
		return true
	}
	switch http.CanonicalHeaderKey(k) {
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix",
		"X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Original-Forwarded-For",
		"X-Real-Ip", "X-Client-Ip", "True-Client-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip":
		return true
	}
	return false
}

// dropForgedHeaders removes every forgedHeader from h, for the standard
// proxy path, which sets its X-Forwarded-* afterwards.
func dropForgedHeaders(h http.Header) {
	for k := range h {
		if forgedHeader(k) {
			delete(h, k)
		}
	}
}
