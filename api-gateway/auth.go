package gateway

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// AuthConfig holds the gateway's access rules.
type AuthConfig struct {
	// APITokens, when any is set, are the bearer tokens the API requires.
	// The proxy path /p/ is not behind them: browsers hold session tokens.
	APITokens []string `envconfig:"API_TOKENS" desc:"bearer tokens the API requires, comma-separated; empty leaves it open"`
	// SessionTokens, when set, makes the proxy require each session's own
	// access token, as returned by /init.
	SessionTokens SessionVerifier `ignored:"true"`
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
		if !ok {
			// EventSource cannot set headers, so the event streams also
			// accept the token as a query parameter.
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
func (g *Gateway) authorizeSession(w http.ResponseWriter, r *http.Request, id string) bool {
	v := g.cfg.AuthConfig.SessionTokens
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
	stripSessionToken(r)
	if fromQuery != "" {
		http.SetCookie(w, &http.Cookie{
			Name: sessionTokenCookie, Value: token, Path: "/p/" + id + "/",
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

// stripSessionToken removes the token from the header, the query and the
// cookies, keeping every other cookie for the app.
func stripSessionToken(r *http.Request) {
	r.Header.Del(sessionTokenHeader)
	// A client that followed the token link may name it in Referer.
	if strings.Contains(r.Header.Get("Referer"), sessionTokenQuery+"=") {
		r.Header.Del("Referer")
	}
	if q := r.URL.Query(); q.Has(sessionTokenQuery) {
		q.Del(sessionTokenQuery)
		r.URL.RawQuery = q.Encode()
	}
	cookies := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cookies {
		if c.Name != sessionTokenCookie {
			r.AddCookie(c)
		}
	}
}

func queryString(u *url.URL) string {
	if u.RawQuery == "" {
		return ""
	}
	return "?" + u.RawQuery
}
