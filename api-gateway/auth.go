package gateway

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// AuthConfig holds the gateway's access rules.
type AuthConfig struct {
	// APITokens, when any is set, are the bearer tokens the API requires.
	// The proxy path /p/ is not behind them: browsers hold session tokens.
	APITokens []string `envconfig:"API_TOKENS" desc:"bearer tokens the API requires, comma-separated; empty leaves it open"`
}

// SessionVerifier checks a session's access token.
type SessionVerifier interface {
	Valid(sessionID, token string) bool
}

// The names a session token travels under. The query parameter is turned
// into the cookie, so the token leaves the address bar and the history.
const (
	sessionTokenHeader = "Spawner-Session-Token"
	sessionTokenQuery  = "spawner_token"
	sessionTokenCookie = "spawner_session"
)

// openPaths need no API token: probes, the API's description, and the
// dashboard's page and assets, which hold no data until the API answers.
func openPath(pattern string) bool {
	switch pattern {
	case "GET /healthz", "GET /readyz", "GET /openapi.json", "GET /{$}", "GET /assets/", "GET /metrics":
		return true
	}
	return false
}

// eventStream reports whether a route pattern is one of the event streams,
// the only API routes that take the token as ?access_token=.
func eventStream(pattern string) bool {
	return pattern == "GET /events" || pattern == "GET /sessions/{id}/events"
}

// requireAPIToken wraps an API handler with the bearer-token check.
func (g *Gateway) requireAPIToken(next http.HandlerFunc) http.HandlerFunc {
	tokens := make([][]byte, 0, len(g.cfg.AuthConfig.APITokens))
	for _, t := range g.cfg.AuthConfig.APITokens {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, []byte(t))
		}
	}
	if len(tokens) == 0 {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok && eventStream(r.Pattern) {
			// EventSource cannot set headers, so the event streams, and only
			// they, also accept the token as a query parameter: elsewhere it
			// would land in access logs and browser history for no reason.
			given = r.URL.Query().Get("access_token")
		}
		// Compare against every token, so timing tells nothing about which
		// one nearly matched.
		match := 0
		for _, t := range tokens {
			match |= subtle.ConstantTimeCompare([]byte(given), t)
		}
		if given == "" || match != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="spawner"`)
			writeError(w, http.StatusUnauthorized, messages.Errorf(messages.CodeUnauthorized, "a valid API token is required"))
			return
		}
		next(w, r)
	}
}

// authorizeSession enforces per-session tokens on the proxy. It reports
// false after answering the request itself. On success the token is
// removed from the request, so the app never sees it.
func (g *Gateway) authorizeSession(w http.ResponseWriter, r *http.Request, a addressed) bool {
	id := a.id
	v := g.tokens
	if v == nil {
		return true
	}
	q := r.URL.Query()
	fromQuery := q.Get(sessionTokenQuery)
	token := r.Header.Get(sessionTokenHeader)
	if token == "" {
		token = fromQuery
	}
	if token == "" {
		if c, err := r.Cookie(sessionTokenCookie); err == nil {
			token = c.Value
		}
	}
	if !v.Valid(id, token) {
		writeError(w, http.StatusUnauthorized, messages.Errorf(messages.CodeUnauthorized, "this session needs its access token"))
		return false
	}
	stripSessionToken(r, token)
	if fromQuery != "" {
		http.SetCookie(w, &http.Cookie{
			Name: sessionTokenCookie, Value: token, Path: a.cookiePath(),
			HttpOnly: true, SameSite: http.SameSiteLaxMode,
			Secure: strings.HasPrefix(g.cfg.PublicURL, "https:"),
		})
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header.Get("Upgrade") == "" {
			// Reload without the token, now that the cookie carries it.
			http.Redirect(w, r, r.URL.EscapedPath()+queryString(r.URL), http.StatusSeeOther)
			return false
		}
	}
	return true
}

// stripSessionToken removes the token from the header, the query, the
// cookies and the Referer. Everything else reaches the app as the client
// sent it: the Cookie and query strings are edited as text rather than
// parsed and re-serialised, which dropped cookies net/http cannot parse
// (a JSON value) and reordered query parameters.
func stripSessionToken(r *http.Request, token string) {
	r.Header.Del(sessionTokenHeader)
	if ref := r.Header.Get("Referer"); ref != "" && mentionsToken(ref, token) {
		r.Header.Del("Referer")
	}
	if r.URL.RawQuery != "" {
		r.URL.RawQuery = withoutQueryParam(r.URL.RawQuery, sessionTokenQuery)
	}
	if cookies, ok := r.Header["Cookie"]; ok {
		kept := cookies[:0]
		for _, line := range cookies {
			if line = withoutCookie(line, sessionTokenCookie); line != "" {
				kept = append(kept, line)
			}
		}
		if len(kept) == 0 {
			r.Header.Del("Cookie")
		} else {
			r.Header["Cookie"] = kept
		}
	}
}

// withoutCookie drops the pairs named name from one Cookie header line and
// leaves every other byte of it alone.
func withoutCookie(line, name string) string {
	if !strings.Contains(line, name) {
		return line
	}
	parts := strings.Split(line, ";")
	kept := parts[:0]
	for _, part := range parts {
		n, _, _ := strings.Cut(part, "=")
		if strings.TrimSpace(n) == name {
			continue
		}
		kept = append(kept, part)
	}
	out := strings.Join(kept, ";")
	// Dropping the first pair leaves the space that followed its ";".
	if len(kept) > 0 && len(kept) < len(parts) && strings.TrimSpace(parts[0]) != strings.TrimSpace(kept[0]) {
		out = strings.TrimLeft(out, " ")
	}
	if strings.TrimSpace(out) == "" {
		return ""
	}
	return out
}

// withoutQueryParam drops every parameter whose decoded name is name, in
// whatever encoding it was sent, and leaves the rest of the query as it was.
func withoutQueryParam(raw, name string) string {
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, part := range parts {
		// Some servers also split on ";"; a token hidden behind one goes too.
		sub := strings.Split(part, ";")
		keptSub := sub[:0]
		for _, p := range sub {
			if k, _, _ := strings.Cut(p, "="); unescapeLoose(strings.ReplaceAll(k, "+", " ")) != name {
				keptSub = append(keptSub, p)
			}
		}
		if len(keptSub) > 0 {
			kept = append(kept, strings.Join(keptSub, ";"))
		}
	}
	return strings.Join(kept, "&")
}

// mentionsToken reports whether a Referer carries the session token: its
// parameter name or its value, raw or percent-encoded once or more.
func mentionsToken(ref, token string) bool {
	for range 4 {
		if strings.Contains(strings.ToLower(ref), sessionTokenQuery) || (token != "" && strings.Contains(ref, token)) {
			return true
		}
		dec := unescapeLoose(ref)
		if dec == ref {
			return false
		}
		ref = dec
	}
	return true // Still encoded after four rounds: drop it rather than guess.
}

// unescapeLoose decodes every valid %XX and keeps malformed escapes as
// they are, where url.PathUnescape would give up on the whole string.
func unescapeLoose(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func queryString(u *url.URL) string {
	if u.RawQuery == "" {
		return ""
	}
	return "?" + u.RawQuery
}
