package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

// echoApp answers every request with its path and headers as JSON, so a
// test can see exactly what the proxy forwarded.
const echoApp = `exec python3 -c '
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/status":
            body = json.dumps({"active_connections": 0, "seconds_inactive": 0, "listening": True}).encode()
        else:
            body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'`

type echoed struct {
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

func do(t *testing.T, c *http.Client, method, url, token string, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func TestAPITokens(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.APITokens = []string{"first-token-0123456789", "second-token-0123456789"}
	h := start(t, cfg)
	c := http.DefaultClient
	for _, tc := range []struct{ method, path, token string }{
		{"POST", "/init", ""},
		{"POST", "/init", "wrong"},
		{"POST", "/init", "first-token-012345678"},
		{"GET", "/sessions", ""},
		{"GET", "/sessions/" + messages.NewSessionID(), ""},
		{"DELETE", "/sessions/" + messages.NewSessionID(), ""},
		{"GET", "/events", ""},
	} {
		resp, body := do(t, c, tc.method, h.BaseURL+tc.path, tc.token, "")
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s with %q: %d %s", tc.method, tc.path, tc.token, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if resp, body := do(t, c, "GET", h.BaseURL+path, "", ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s should be open: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body := do(t, c, "POST", h.BaseURL+"/init", "second-token-0123456789", "")
	var rep messages.SpawnReply
	if resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &rep) != nil {
		t.Fatalf("POST /init with a valid token: %d %s", resp.StatusCode, body)
	}
	// The proxy is not behind the API token.
	if code, _ := get(t, rep.URL+"status"); code != http.StatusOK {
		t.Fatalf("the session URL needs no API token, got %d", code)
	}
	if resp, _ := do(t, c, "GET", h.BaseURL+"/sessions", "first-token-0123456789", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sessions with a valid token: %d", resp.StatusCode)
	}
}

func TestSessionTokens(t *testing.T) {
	cfg := testConfig(t)
	cfg.Common.SessionAuth = "token"
	cfg.Process.Command = echoApp
	h := start(t, cfg)
	var a, b messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &a); code != http.StatusCreated || len(a.Token) < 40 {
		t.Fatalf("POST /init: %d %+v", code, a)
	}
	post(t, h.BaseURL+"/init", "", &b)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	if resp, body := do(t, noRedirect, "GET", a.URL, "", ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
		t.Fatalf("no token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, noRedirect, "GET", b.URL+"?spawner_token="+a.Token, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session A's token opened session B: %d", resp.StatusCode)
	}

	// The query token becomes a cookie scoped to the session and leaves the URL.
	resp, _ := do(t, noRedirect, "GET", a.URL+"page?x=1&spawner_token="+a.Token, "", "")
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), a.Token) {
		t.Fatalf("query token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "spawner_session" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.Path != "/p/"+a.SessionID+"/" {
		t.Fatalf("cookie %+v", cookie)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, body := do(t, browser, "GET", a.URL+"page?x=1&spawner_token="+a.Token, "", "")
	var seen echoed
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &seen) != nil {
		t.Fatalf("following the token link: %d %s", resp.StatusCode, body)
	}
	if seen.Path != "/page?x=1" || strings.Contains(body, a.Token) {
		t.Fatalf("the app saw %+v", seen)
	}
	if resp, _ := do(t, browser, "GET", b.URL, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session A's cookie opened session B: %d", resp.StatusCode)
	}

	// A header token works too, and is stripped with the cookie while the
	// app's own cookies pass through.
	req, _ := http.NewRequest("GET", a.URL+"hdr", nil)
	req.Header.Set("Spawner-Session-Token", a.Token)
	req.Header.Set("Cookie", "theme=dark; spawner_session="+a.Token)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	seen = echoed{}
	if r2.StatusCode != http.StatusOK || json.Unmarshal(data, &seen) != nil {
		t.Fatalf("header token: %d %s", r2.StatusCode, data)
	}
	if strings.Contains(string(data), a.Token) || seen.Headers["cookie"] != "theme=dark" {
		t.Fatalf("the token reached the app or the app's cookie was lost: %s", data)
	}
	if seen.Headers["x-forwarded-prefix"] != "/p/"+a.SessionID || seen.Headers["x-forwarded-for"] == "" || seen.Headers["x-forwarded-proto"] != "http" {
		t.Fatalf("forwarded headers: %v", seen.Headers)
	}
	// A keyed get-or-create hands out the same working token again.
	var k1, k2 messages.SpawnReply
	post(t, h.BaseURL+"/init", `{"key":"shared"}`, &k1)
	post(t, h.BaseURL+"/init", `{"key":"shared"}`, &k2)
	if k1.Token == "" || k1.Token != k2.Token {
		t.Fatalf("keyed tokens differ: %q %q", k1.Token, k2.Token)
	}
}
