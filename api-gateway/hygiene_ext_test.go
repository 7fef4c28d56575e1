package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"

	gateway "github.com/spawnerhq/spawner/api-gateway"
)

// tokenOf is the test's session token scheme.
type tokenOf struct{}

func (tokenOf) Valid(id, token string) bool { return token == "tok-"+id }

// headerApp answers with every request header as it arrived, and the raw
// query; on a WebSocket it sends the same as its first message.
type headersSeen struct {
	Header http.Header `json:"header"`
	Query  string      `json:"query"`
}

func headerApp(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ := json.Marshal(headersSeen{Header: r.Header, Query: r.URL.RawQuery})
		if r.Header.Get("Upgrade") != "" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			_ = c.Write(r.Context(), websocket.MessageText, seen)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(seen)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func sessionSite(t *testing.T) (*site, string) {
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { d.SessionTokens = tokenOf{} })
	return s, s.addReady(t, headerApp(t))
}

func seenBy(t *testing.T, r response) headersSeen {
	t.Helper()
	var h headersSeen
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatalf("app answer %q: %v", r.body, err)
	}
	return h
}

// With session auth on, the proxy takes its own cookie out and leaves the
// app's cookies exactly as the browser sent them.
func TestProxyKeepsAppCookiesByteForByte(t *testing.T) {
	s, id := sessionSite(t)
	tok := "tok-" + id
	jsonCookie := `prefs={"theme":"dark","tabs":[1,2]}`
	cases := []struct{ sent, want string }{
		{"a=1; spawner_session=" + tok + "; " + jsonCookie + `; b="quoted"; c=x y`, "a=1; " + jsonCookie + `; b="quoted"; c=x y`},
		{"spawner_session=" + tok + "; " + jsonCookie, jsonCookie},
		{jsonCookie + ";spawner_session=" + tok, jsonCookie},
		{"spawner_session=" + tok, ""},
	}
	for _, c := range cases {
		got := seenBy(t, s.do(t, "GET", "/p/"+id+"/", nil, "Cookie", c.sent))
		cookie := strings.Join(got.Header["Cookie"], "\n")
		if cookie != c.want {
			t.Errorf("sent Cookie %q, the app got %q, want %q", c.sent, cookie, c.want)
		}
	}
}

// The token never reaches the app in a Referer, however it is encoded.
func TestProxyStripsTokenFromReferer(t *testing.T) {
	s, id := sessionSite(t)
	tok := "tok-" + id
	page := s.base + "/p/" + id + "/"
	for _, ref := range []string{
		page + "?spawner_token=" + tok,
		page + "?spawner%5Ftoken=" + tok,
		page + "?%73pawner_token=" + tok,
		page + "?%2573pawner%255Ftoken=x",
		page + "?SPAWNER_TOKEN=x",
		page + "?next=" + url.QueryEscape(page+"?spawner_token="+tok),
		page + "page?t=" + tok,
	} {
		got := seenBy(t, s.do(t, "GET", "/p/"+id+"/", nil, "Spawner-Session-Token", tok, "Referer", ref))
		if r := got.Header["Referer"]; len(r) > 0 {
			t.Errorf("Referer %q reached the app as %q", ref, r)
		}
	}
	plain := page + "other?x=1"
	got := seenBy(t, s.do(t, "GET", "/p/"+id+"/", nil, "Spawner-Session-Token", tok, "Referer", plain))
	if r := got.Header.Get("Referer"); r != plain {
		t.Errorf("a Referer with no token reached the app as %q, want it unchanged", r)
	}
	for k := range got.Header {
		if strings.EqualFold(k, "Spawner-Session-Token") {
			t.Errorf("the app got %s", k)
		}
	}
}

// The token leaves the query in any encoding; the rest keeps its order.
func TestProxyStripsTokenFromQueryKeepingTheRest(t *testing.T) {
	s, id := sessionSite(t)
	tok := "tok-" + id
	r := s.do(t, "GET", "/p/"+id+"/?z=1&spawner%5Ftoken="+tok+"&a=2&a=1", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/p/"+id+"/?z=1&a=2&a=1" {
		t.Fatalf("status %d Location %q", r.status, r.header.Get("Location"))
	}
	// A token behind a ";", which some servers split on, goes too.
	got := seenBy(t, s.do(t, "POST", "/p/"+id+"/?z=1;spawner_token="+tok+"&b=%20", nil, "Spawner-Session-Token", tok))
	if got.Query != "z=1&b=%20" {
		t.Errorf("the app got query %q", got.Query)
	}
}

// Client-sent forwarding headers, in any spelling, never reach the app, on
// the fast path and on the standard proxy that carries WebSockets.
func TestProxyDropsForgedForwardingHeaders(t *testing.T) {
	s := newSite(t)
	id := s.addReady(t, headerApp(t))
	forged := []string{
		"X-Real-IP", "6.6.6.6", "X_Forwarded_For", "6.6.6.6", "X-Forwarded-For", "6.6.6.6",
		"X_Real_IP", "6.6.6.6", "Forwarded", "for=6.6.6.6", "X-Forwarded-Prefix", "/evil",
		"X-Forwarded-Host", "evil.example", "True-Client-IP", "6.6.6.6", "X-Custom", "kept",
	}
	check := func(path string, h headersSeen) {
		t.Helper()
		for k, v := range h.Header {
			if strings.Contains(k, "_") || strings.Contains(strings.Join(v, ","), "6.6.6.6") || strings.Contains(strings.Join(v, ","), "evil") {
				t.Errorf("%s: the app got %s: %q", path, k, v)
			}
		}
		if got := h.Header["X-Forwarded-For"]; len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("%s: X-Forwarded-For %q, want the address the gateway saw", path, got)
		}
		if got := h.Header["X-Forwarded-Prefix"]; len(got) != 1 || got[0] != "/p/"+id {
			t.Errorf("%s: X-Forwarded-Prefix %q", path, got)
		}
		if got := h.Header["X-Custom"]; len(got) != 1 || got[0] != "kept" {
			t.Errorf("%s: an ordinary header did not arrive: %q", path, got)
		}
	}
	check("fast path", seenBy(t, s.do(t, "GET", "/p/"+id+"/", nil, forged...)))

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	hdr := http.Header{}
	for i := 0; i < len(forged); i += 2 {
		hdr[forged[i]] = []string{forged[i+1]} // as spelled, not canonicalised
	}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+"/p/"+id+"/ws", &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var h headersSeen
	if err := json.Unmarshal(data, &h); err != nil {
		t.Fatal(err)
	}
	check("websocket", h)
}

// ?access_token= opens the event streams, which EventSource cannot send
// headers to, and nothing else.
func TestAccessTokenQueryOnlyOnEventStreams(t *testing.T) {
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.APITokens = []string{"api-token-0123456789"} })
	q := "?access_token=api-token-0123456789"
	for _, tc := range []struct{ method, path string }{
		{"GET", "/sessions"}, {"POST", "/init"}, {"GET", "/sessions/01hzzzzzzzzzzzzzzzzzzzzzzz"},
		{"DELETE", "/sessions/01hzzzzzzzzzzzzzzzzzzzzzzz"},
	} {
		r := s.do(t, tc.method, tc.path+q, nil)
		if r.status != http.StatusUnauthorized || apiError(t, r).Code != "unauthorized" {
			t.Errorf("%s %s with ?access_token=: %d %s, want 401", tc.method, tc.path, r.status, r.body)
		}
	}
	if r := s.do(t, "GET", "/sessions", nil, "Authorization", "Bearer api-token-0123456789"); r.status != http.StatusOK {
		t.Errorf("GET /sessions with the header: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/events", "/sessions/" + s.addReady(t, "127.0.0.1:1") + "/events"} {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		req, _ := http.NewRequestWithContext(ctx, "GET", s.base+path+q, nil)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Errorf("GET %s with ?access_token=: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		resp.Body.Close()
		cancel()
	}
}
