package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spawnerhq/spawner/messages"
)

// seen is what an upstream app was sent.
type seen struct {
	Name, Method, Path, RawPath, URI, Query, Host string
	XFF, XFHost, XFProto, XFPrefix, Custom        string
}

// echoUpstream is an app that answers with what it was sent.
func echoUpstream(t testing.TB, name string) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 20)
			for {
				typ, data, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, append([]byte(name+":"), data...)); err != nil {
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", name)
		_ = json.NewEncoder(w).Encode(seen{Name: name, Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath,
			URI: r.RequestURI, Query: r.URL.RawQuery, Host: r.Host, XFF: r.Header.Get("X-Forwarded-For"),
			XFHost: r.Header.Get("X-Forwarded-Host"), XFProto: r.Header.Get("X-Forwarded-Proto"),
			XFPrefix: r.Header.Get("X-Forwarded-Prefix"), Custom: r.Header.Get("X-Custom")})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), hits
}

func decodeSeen(t *testing.T, r response) seen {
	t.Helper()
	var s seen
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("upstream answer %q: %v", r.body, err)
	}
	return s
}

func TestProxyUnknownSession(t *testing.T) {
	s := newSite(t)
	stopping := s.addReady(t, "127.0.0.1:1")
	entry, _ := s.reg.Get(context.Background(), stopping)
	entry.Session.Status = messages.StatusStopping
	if _, err := s.reg.Update(context.Background(), entry.Session, entry.Revision); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/p/" + messages.NewSessionID() + "/", "/p/" + messages.NewSessionID(), "/p/nope/",
		"/p/", "/p/ABCDEFGHIJKLMNOPQRSTUVWXYZ/x"} {
		r := s.do(t, http.MethodGet, p, nil)
		if r.status != http.StatusNotFound || apiError(t, r).Code != messages.CodeNotFound {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	// The route table learns of the stop through the registry watch, a
	// moment after the update; from then on the session is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := s.do(t, http.MethodGet, "/p/"+stopping+"/", nil)
		if r.status == http.StatusNotFound && apiError(t, r).Code == messages.CodeNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stopping session is still routed: %d %s", r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProxyRedirectsToTrailingSlash(t *testing.T) {
	s := newSite(t)
	up, hits := echoUpstream(t, "A")
	id := s.addReady(t, up)
	for path, want := range map[string]string{
		"/p/" + id:          "/p/" + id + "/",
		"/p/" + id + "?a=1": "/p/" + id + "/?a=1",
	} {
		r := s.do(t, http.MethodGet, path, nil)
		if r.status != http.StatusPermanentRedirect || r.header.Get("Location") != want {
			t.Errorf("GET %s: %d Location %q, want 308 to %q", path, r.status, r.header.Get("Location"), want)
		}
	}
	if hits.Load() != 0 {
		t.Error("a redirect reached the app")
	}
}

func TestProxyForwards(t *testing.T) {
	s := newSite(t)
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	host := strings.TrimPrefix(s.base, "http://")
	got := decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/app/page?q=1&r=a%20b", nil,
		"X-Custom", "kept", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil.example", "X-Forwarded-Prefix", "/evil"))
	want := seen{Name: "A", Method: "GET", Path: "/app/page", URI: "/app/page?q=1&r=a%20b", Query: "q=1&r=a%20b",
		Host: host, XFF: "127.0.0.1", XFHost: host, XFProto: "http", XFPrefix: "/p/" + id, Custom: "kept"}
	if got != want {
		t.Errorf("upstream saw\n%+v\nwant\n%+v", got, want)
	}
	root := decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/", nil))
	if root.URI != "/" {
		t.Errorf("the session root reached the app as %q", root.URI)
	}
	post := decodeSeen(t, s.do(t, http.MethodPost, "/p/"+id+"/form", strings.NewReader("a=1")))
	if post.Method != "POST" || post.Path != "/form" {
		t.Errorf("POST reached the app as %+v", post)
	}
}

func TestProxyKeepsEncodedSlashes(t *testing.T) {
	s := newSite(t)
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	got := decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/files/a%2Fb/c%20d?next=%2Fhome", nil))
	if got.URI != "/files/a%2Fb/c%20d?next=%2Fhome" || got.Path != "/files/a/b/c d" {
		t.Errorf("upstream saw URI %q path %q", got.URI, got.Path)
	}
}

func TestProxyWebSocket(t *testing.T) {
	s := newSite(t)
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+"/p/"+id+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, msg := range []string{"hello", strings.Repeat("x", 100<<10)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageText || string(data) != "A:"+msg {
			t.Errorf("echo = %.40q, want %.40q", data, "A:"+msg)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestProxyRouteComesOnlyFromTheRegistry checks that a client cannot steer
// the proxy to another address with the Host header or an absolute URL.
func TestProxyRouteComesOnlyFromTheRegistry(t *testing.T) {
	s := newSite(t)
	upA, _ := echoUpstream(t, "A")
	upB, hitsB := echoUpstream(t, "B")
	id := s.addReady(t, upA)

	if got := decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/x", nil, "Host", upB)); got.Name != "A" {
		t.Errorf("a Host header of %s sent the request to %s", upB, got.Name)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(patience))
	fmt.Fprintf(conn, "GET http://%s/p/%s/x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", upB, id, upB)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Upstream") != "A" {
		body, _ := io.ReadAll(resp.Body)
		t.Errorf("an absolute URL naming %s got %d from %q: %s", upB, resp.StatusCode, resp.Header.Get("X-Upstream"), body)
	}
	if hitsB.Load() != 0 {
		t.Errorf("upstream B got %d requests", hitsB.Load())
	}
}

func TestProxyDeadUpstreamIs502(t *testing.T) {
	s := newSite(t)
	id := s.addReady(t, deadAddr(t))
	r := s.do(t, http.MethodGet, "/p/"+id+"/", nil)
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", r.status, r.body)
	}
	apiError(t, r)
}

func TestProxyStopsRoutingDeletedSession(t *testing.T) {
	s := newSite(t)
	up, _ := echoUpstream(t, "A")
	id := s.addReady(t, up)
	decodeSeen(t, s.do(t, http.MethodGet, "/p/"+id+"/", nil))
	if err := s.reg.Delete(context.Background(), id, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patience)
	for {
		r := s.do(t, http.MethodGet, "/p/"+id+"/", nil)
		if r.status == http.StatusNotFound {
			apiError(t, r)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted session is still routed: %d", r.status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
