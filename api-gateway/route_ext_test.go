package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// redirectingApp redirects / to an absolute path and to an absolute URL
// on its own address, and sets cookies the way apps without a base-URL
// setting do.
func redirectingApp(t *testing.T) string {
	t.Helper()
	var self string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			http.SetCookie(w, &http.Cookie{Name: "_xsrf", Value: "abc", Path: "/"})
			w.Header().Add("Set-Cookie", "plain=1")
			w.Header().Add("Set-Cookie", "deep=2; Path=/api; HttpOnly")
			http.Redirect(w, r, "/tree?x=1", http.StatusFound)
		case "/self":
			http.Redirect(w, r, "http://"+self+"/tree#top", http.StatusFound)
		case "/host":
			http.Redirect(w, r, "http://"+r.Host+"/tree", http.StatusFound)
		case "/away":
			http.Redirect(w, r, "https://example.com/elsewhere", http.StatusFound)
		case "/relative":
			w.Header().Set("Location", "tree")
			w.WriteHeader(http.StatusFound)
		default:
			if strings.HasSuffix(r.URL.Path, "/go") {
				http.Redirect(w, r, "/tree?x=1", http.StatusFound)
				return
			}
			_, _ = io.WriteString(w, "path "+r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	self = strings.TrimPrefix(srv.URL, "http://")
	return self
}

// Under path routing, redirects and cookies stay inside the session, as
// nginx's proxy_redirect and proxy_cookie_path would keep them.
func TestPathRoutingRewritesRedirectsAndCookies(t *testing.T) {
	s := newSite(t)
	id := s.addReady(t, redirectingApp(t))
	p := "/p/" + id
	r := s.do(t, http.MethodGet, p+"/", nil)
	if r.status != http.StatusFound || r.header.Get("Location") != p+"/tree?x=1" {
		t.Errorf("GET /: %d Location %q, want %s/tree?x=1", r.status, r.header.Get("Location"), p)
	}
	want := []string{"_xsrf=abc; Path=" + p + "/", "plain=1; Path=" + p + "/", "deep=2; Path=" + p + "/api; HttpOnly"}
	if got := r.header.Values("Set-Cookie"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Set-Cookie %q, want %q", got, want)
	}
	for path, loc := range map[string]string{
		"/self":     p + "/tree#top",
		"/host":     p + "/tree",
		"/away":     "https://example.com/elsewhere",
		"/relative": "tree",
	} {
		if got := s.do(t, http.MethodGet, p+path, nil).header.Get("Location"); got != loc {
			t.Errorf("GET %s: Location %q, want %q", path, got, loc)
		}
	}
}

// Under path-keep routing the app sees the whole path, and nothing it
// sends back is changed.
func TestPathKeepRoutingKeepsThePrefix(t *testing.T) {
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.Routing = "path-keep" })
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	got := decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/tree/x?y=1", nil, "X-Forwarded-Prefix", "/evil"))
	if got.Path != "/p/"+id+"/tree/x" || got.URI != "/p/"+id+"/tree/x?y=1" || got.XFPrefix != "" {
		t.Errorf("the app saw %+v", got)
	}
	r := s.do(t, http.MethodGet, "/p/"+id, nil)
	if r.status != http.StatusPermanentRedirect || r.header.Get("Location") != "/p/"+id+"/" {
		t.Errorf("GET /p/<id>: %d %q", r.status, r.header.Get("Location"))
	}
	red := s.addReady(t, redirectingApp(t))
	if loc := s.do(t, http.MethodGet, "/p/"+red+"/go", nil).header.Get("Location"); loc != "/tree?x=1" {
		t.Errorf("path-keep changed a Location to %q", loc)
	}
}

// Under subdomain routing a session's host reaches its app at /, and
// nothing else: not the API, not the dashboard, not another session.
func TestSubdomainRouting(t *testing.T) {
	const domain = "sessions.localhost:8080"
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.Routing = "subdomain"; c.SessionDomain = domain })
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	host := id + "." + domain
	got := decodeSeen(t, s.do(t, http.MethodGet, "/tree?x=1", nil, "Host", host))
	if got.Name != "A" || got.URI != "/tree?x=1" || got.Host != host || got.XFPrefix != "" {
		t.Errorf("the app saw %+v", got)
	}
	for _, path := range []string{"/sessions", "/", "/metrics", "/openapi.json"} {
		r := s.do(t, http.MethodGet, path, nil, "Host", host)
		if seen := decodeSeen(t, r); seen.Name != "A" || seen.Path != path {
			t.Errorf("GET %s on the session host did not reach the app", path)
		}
	}
	if r := s.do(t, http.MethodGet, "/x", nil, "Host", messages.NewSessionID()+"."+domain); r.status != http.StatusNotFound {
		t.Errorf("an unknown session host answered %d", r.status)
	}
	if r := s.do(t, http.MethodGet, "/p/"+id+"/", nil); r.status != http.StatusNotFound || !strings.Contains(string(r.body), domain) {
		t.Errorf("/p/ on the API host: %d %s", r.status, r.body)
	}
	if r := s.do(t, http.MethodGet, "/sessions", nil); r.status != http.StatusOK {
		t.Errorf("the API host no longer serves the API: %d", r.status)
	}
}

func TestSubdomainRoutingNeedsADomain(t *testing.T) {
	cfg := settings.Defaults[gateway.Config]()
	cfg.Routing = "subdomain"
	_, err := gateway.New(cfg, gateway.Deps{})
	if err == nil || !strings.Contains(err.Error(), "SPAWNER_SESSION_DOMAIN") {
		t.Errorf("New without a session domain: %v", err)
	}
	cfg.Routing = "host"
	_, err = gateway.New(cfg, gateway.Deps{})
	if err == nil || !strings.Contains(err.Error(), "path-keep") {
		t.Errorf("New with an unknown routing mode: %v", err)
	}
}

// The proxy status source: the gateway reports a session while a response
// is still streaming, and stops reporting it once it is idle.
func TestProxyActivityIsPublished(t *testing.T) {
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.ProbeInterval = 100 * time.Millisecond })
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first part\n")
		w.(http.Flusher).Flush()
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	sess := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process",
		Upstream: strings.TrimPrefix(srv.URL, "http://"), CreatedAt: time.Now().UTC(), ProxyActivity: true}
	if _, err := s.reg.Create(context.Background(), sess); err != nil {
		t.Fatal(err)
	}
	reports := make(chan messages.SessionActivity, 100)
	sub, err := s.peer.Subscribe(s.subj.Activity(), func(m *nats.Msg) {
		a, err := messages.DecodeActivity(m.Data)
		if err != nil {
			t.Errorf("undecodable activity: %v", err)
			return
		}
		for _, e := range a.Sessions {
			reports <- e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	resp, err := http.Get(s.base + "/p/" + sess.ID + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	deadline := time.After(patience)
	for inFlight := false; !inFlight; {
		select {
		case e := <-reports:
			inFlight = e.SessionID == sess.ID && e.InFlight == 1
		case <-deadline:
			t.Fatal("no report of the streaming response")
		}
	}
	close(release)
	_, _ = io.Copy(io.Discard, resp.Body)
	// The end of the response is reported once, then nothing: an idle
	// session costs no messages.
	quiet := time.After(600 * time.Millisecond)
	var last messages.SessionActivity
	for done := false; !done; {
		select {
		case e := <-reports:
			last = e
			quiet = time.After(600 * time.Millisecond)
		case <-quiet:
			done = true
		case <-deadline:
			t.Fatal("reports never stopped for an idle session")
		}
	}
	if last.InFlight != 0 || time.Since(last.LastActive) > patience {
		t.Errorf("last report %+v", last)
	}
	data, _ := json.Marshal(last)
	t.Logf("last report: %s", data)
}

// Under subdomain routing a session token in the query becomes a cookie
// of the session's host alone: no Domain, the whole host's path.
func TestSubdomainSessionTokenCookieIsHostOnly(t *testing.T) {
	const domain = "sessions.localhost:8080"
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) {
		c.Routing, c.SessionDomain, d.SessionTokens = "subdomain", domain, tokenOf{}
	})
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	host := id + "." + domain
	if r := s.do(t, http.MethodGet, "/x", nil, "Host", host); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.status)
	}
	r := s.do(t, http.MethodGet, "/x?spawner_token=tok-"+id+"&a=1", nil, "Host", host)
	cookies := (&http.Response{Header: r.header}).Cookies()
	if r.status != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("token in the query: %d, cookies %v", r.status, r.header.Values("Set-Cookie"))
	}
	if c := cookies[0]; c.Path != "/" || c.Domain != "" || !c.HttpOnly || c.Value != "tok-"+id {
		t.Errorf("session cookie %+v, want host-only, Path=/, HttpOnly", c)
	}
	if loc := r.header.Get("Location"); loc != "/x?a=1" {
		t.Errorf("redirect to %q", loc)
	}
	seen := decodeSeen(t, s.do(t, http.MethodGet, "/x", nil, "Host", host, "Cookie", "spawner_session=tok-"+id))
	if seen.Name != "A" {
		t.Errorf("the cookie did not open the session: %+v", seen)
	}
	other := s.addReady(t, up)
	if r := s.do(t, http.MethodGet, "/x", nil, "Host", other+"."+domain, "Cookie", "spawner_session=tok-"+id); r.status != http.StatusUnauthorized {
		t.Errorf("one session's token opened another: %d", r.status)
	}
}
