package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

// A known path asked with the wrong method gets a JSON 405 that says which
// methods it takes, on every API path; an unknown path stays 404.
func TestWrongMethodIs405WithAllow(t *testing.T) {
	s := newSite(t)
	id := messages.NewSessionID()
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/init", "POST"},
		{"PUT", "/init", "POST"},
		{"POST", "/sessions", "GET, HEAD"},
		{"POST", "/sessions/" + id, "GET, HEAD, DELETE"},
		{"PATCH", "/sessions/" + id + "/events", "GET, HEAD"},
		{"DELETE", "/events", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
		{"POST", "/readyz", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
		{"DELETE", "/openapi.json", "GET, HEAD"},
	} {
		r := s.do(t, tc.method, tc.path, nil)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, r.status, r.header.Get("Allow"), tc.allow)
			continue
		}
		if e := apiError(t, r); !strings.Contains(e.Message, tc.allow) {
			t.Errorf("%s %s: message %q does not name the methods", tc.method, tc.path, e.Message)
		}
	}
	for _, p := range []string{"/nope", "/init/x", "/sessions/a/b"} {
		if r := s.do(t, "GET", p, nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
}

// A JSON mistake in /init says what is wrong and at which byte.
func TestInitSyntaxErrorNamesTheByte(t *testing.T) {
	s := newSite(t)
	for body, want := range map[string]string{
		`{"key": nul}`:              "malformed JSON at byte 11",
		`{"key":"a",}`:              "malformed JSON at byte 11",
		`{"Key":"a"}`:               `unknown field "Key"; field names are lower case: "key"`,
		`null`:                      "must be an object, not null",
		`{"env":{"A":"1","A":"2"}}`: `"A" appears twice`,
	} {
		r := s.do(t, "POST", "/init", strings.NewReader(body))
		if e := apiError(t, r); r.status != http.StatusBadRequest || !strings.Contains(e.Message, want) {
			t.Errorf("POST /init %s: %d %q, want 400 mentioning %q", body, r.status, e.Message, want)
		}
	}
}
