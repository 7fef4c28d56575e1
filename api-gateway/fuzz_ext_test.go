package gateway_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

// FuzzProxyRequestPath sends arbitrary paths under /p/ through the real
// gateway. Whatever the path, the answer is the live session's app, a 502
// from the dead one, a redirect, or a JSON 404, and never a panic.
func FuzzProxyRequestPath(f *testing.F) {
	s := newSite(f)
	up, _ := echoUpstream(f, "live")
	live := s.addReady(f, up)
	dead := s.addReady(f, deadAddr(f))
	for _, seed := range []string{
		"/p/" + live + "/", "/p/" + live, "/p/" + live + "/a/b?c=d", "/p/" + dead + "/x",
		"/p/../", "/p/%2e%2e/sessions", "/p/" + live + "/a%2Fb", "/p/" + live + "%2F..%2F" + dead + "/",
		"/p//" + live + "/", "/p/" + live + "//x", "/p/" + strings.ToUpper(live) + "/", "/p/" + live + "/../" + dead + "/",
		"/p/" + messages.NewSessionID() + "/", "/p/" + live + "/" + strings.Repeat("a/", 20000),
		"/p/" + live + "?%zz", "/p/%" + live, "/p/" + live + "/\x00", "/p/" + live + "#frag",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if !strings.HasPrefix(path, "/p/") {
			path = "/p/" + path
		}
		// Parse the request line exactly as the server does; what it
		// refuses never reaches the gateway's handlers.
		raw := "GET " + path + " HTTP/1.1\r\nHost: gw.test\r\n\r\n"
		if strings.ContainsAny(path, " \r\n") {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		r := s.doRaw(t, path)
		switch {
		case r.status == http.StatusOK:
			if r.header.Get("X-Upstream") != "live" {
				t.Fatalf("%q: 200 not from the live session's app: %s", path, r.body)
			}
		case r.status == http.StatusBadGateway:
			if !strings.Contains(req.URL.Path, dead) {
				t.Fatalf("%q: 502 for a path that does not name the dead session", path)
			}
			apiError(t, r)
		case r.status >= 500:
			t.Fatalf("%q: status %d: %s", path, r.status, r.body)
		case r.status == http.StatusNotFound:
			var body struct {
				Error *messages.Error `json:"error"`
			}
			if json.Unmarshal(r.body, &body) != nil || body.Error == nil || body.Error.Code != messages.CodeNotFound {
				t.Fatalf("%q: 404 without a JSON error: %q", path, r.body)
			}
		case r.status == http.StatusMovedPermanently || r.status == http.StatusTemporaryRedirect || r.status == http.StatusPermanentRedirect:
			loc := r.header.Get("Location")
			if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") {
				t.Fatalf("%q: redirect to %q leaves the site", path, loc)
			}
		case r.status == http.StatusBadRequest || r.status == http.StatusRequestHeaderFieldsTooLarge:
			// The server refused the request line; nothing was routed.
		default:
			t.Fatalf("%q: unexpected status %d: %s", path, r.status, r.body)
		}
	})
}
