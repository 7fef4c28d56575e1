package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// benchRoutes fills a route table with n sessions and returns their ids.
func benchRoutes(n int) (*routeTable, []string) {
	t := newRouteTable()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = messages.NewSessionID()
		t.apply(messages.Session{ID: ids[i], Status: messages.StatusReady, Upstream: "127.0.0.1:9"})
	}
	return t, ids
}

// BenchmarkSessionLookup is the per-request route lookup with 10,000 live
// sessions, as proxySession does it: address the request, check the id,
// find the upstream.
func BenchmarkSessionLookup(b *testing.B) {
	routes, ids := benchRoutes(10_000)
	reqs := make([]*http.Request, len(ids))
	for i, id := range ids {
		reqs[i] = httptest.NewRequest(http.MethodGet, "/p/"+id+"/api/items?page=2", nil)
	}
	rt := newRouter(messages.RoutingPath, "")
	lookup := func(r *http.Request) bool {
		a, ok := rt.address(r)
		if !ok || !validSessionID(a.id) {
			return false
		}
		_, ok = routes.lookup(a.id)
		return ok
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if !lookup(reqs[i%len(reqs)]) {
				b.Fatal("no route")
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if !lookup(reqs[i%len(reqs)]) {
					b.Error("no route")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkProxy sends small JSON requests through the whole gateway
// handler to a real upstream, over real sockets, from parallel clients.
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"items":[1,2,3]}`)
	}))
	defer up.Close()
	env := bustest.Run(b)
	reg := registry.New(env.KV)
	g, err := New(testConfig(time.Second), Deps{NATS: env.Conn, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady,
		Upstream: strings.TrimPrefix(up.URL, "http://"), CreatedAt: time.Now()}
	if _, err := reg.Create(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	url := "http://" + ln.Addr().String() + "/p/" + s.ID + "/api/items"
	for { // the registry watch feeds the route table
		if _, ok := g.routes.lookup(s.ID); ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

func TestRouterAddress(t *testing.T) {
	path := newRouter(messages.RoutingPath, "")
	cases := []struct{ path, id, rest, prefix string }{
		{"/p/" + fpSession + "/a/b", fpSession, "/a/b", "/p/" + fpSession},
		{"/p/" + fpSession + "/", fpSession, "/", "/p/" + fpSession},
		{"/p/" + fpSession, fpSession, "", "/p/" + fpSession},
		{"/p//x", "", "/x", "/p/"},
	}
	for _, c := range cases {
		a, ok := path.address(httptest.NewRequest(http.MethodGet, c.path, nil))
		if !ok || a.id != c.id || a.rest != c.rest || a.prefix != c.prefix {
			t.Errorf("address(%q) = %+v %v", c.path, a, ok)
		}
	}
	if _, ok := path.address(httptest.NewRequest(http.MethodGet, "/q/x", nil)); ok {
		t.Error("a path outside /p/ was accepted")
	}
	sub := newRouter(messages.RoutingSubdomain, "sessions.localhost:8080")
	for host, want := range map[string]string{
		fpSession + ".sessions.localhost:8080": fpSession,
		"ABC.Sessions.LocalHost:8080":          "abc",
		"sessions.localhost:8080":              "",
		"x.y.sessions.localhost:8080":          "",
		fpSession + ".sessions.localhost:9090": "",
		fpSession + ".evil.com":                "",
		fpSession + "sessions.localhost:8080":  "",
	} {
		id, ok := sub.sessionHost(host)
		if ok != (want != "") || id != want {
			t.Errorf("sessionHost(%q) = %q %v, want %q", host, id, ok, want)
		}
	}
	noPort := newRouter(messages.RoutingSubdomain, "sessions.example.com")
	if id, ok := noPort.sessionHost(fpSession + ".sessions.example.com:443"); !ok || id != fpSession {
		t.Errorf("a session host with a port was not matched by a domain without one: %q %v", id, ok)
	}
}

// FuzzProxyPath holds the proxy's one path parser to the definitions the
// rest of Spawner uses.
func FuzzProxyPath(f *testing.F) {
	for _, s := range []string{"/p/" + fpSession + "/x?y", "/p/", "/p/ABCDEFGHIJKLMNOPQRSTUVWXYZ/", "/p/abc", "/x", "/p/" + fpSession} {
		f.Add(s, fpSession+".s.localhost:8080")
	}
	path := newRouter(messages.RoutingPath, "")
	sub := newRouter(messages.RoutingSubdomain, "s.localhost:8080")
	f.Fuzz(func(t *testing.T, p, host string) {
		r := &http.Request{URL: &url.URL{Path: p}, Host: host}
		a, ok := path.address(r)
		if ok != strings.HasPrefix(p, "/p/") {
			t.Fatalf("address(%q) ok = %v", p, ok)
		}
		if ok && (a.prefix+a.rest != p || a.prefix != "/p/"+a.id || strings.Contains(a.id, "/")) {
			t.Fatalf("address(%q) = %+v", p, a)
		}
		if validSessionID(a.id) != messages.ValidSessionID(a.id) {
			t.Fatalf("validSessionID(%q) = %v, messages says %v", a.id, validSessionID(a.id), messages.ValidSessionID(a.id))
		}
		if id, ok := sub.sessionHost(host); ok && !strings.EqualFold(id+".s.localhost:8080", strings.TrimSuffix(host, ".")) {
			t.Fatalf("sessionHost(%q) = %q", host, id)
		}
	})
}
