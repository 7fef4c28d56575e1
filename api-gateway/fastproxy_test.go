package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
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

const fpSession = "abcdefghijklmnopqrstuvwxyz"

// fpGateway serves /p/<fpSession>/ through a fastProxy to upstream, as
// the gateway's proxy route does once the session is found.
func fpGateway(t *testing.T, upstream string) *httptest.Server {
	t.Helper()
	p := newProxy(time.Second, slog.New(slog.DiscardHandler))
	f := newFastProxy(time.Second, p.rp, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := newRouter(messages.RoutingPath, "")
		a, ok := rt.address(r)
		if !ok || a.id != fpSession {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session"))
			return
		}
		fwd := forwarding{upstream: upstream, prefix: a.prefix, publicHost: r.Host}
		stripPrefix(r, a)
		f.forward(w, r, fwd)
	}))
	t.Cleanup(func() { srv.Close(); f.closeIdle() })
	return srv
}

func upstreamServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func TestFastProxyForwardsPathQueryAndHeaders(t *testing.T) {
	type seen struct {
		Method, URI, Host, Cookie, Custom, Hop, XFF, XFHost, XFProto, XFPrefix, UA string
	}
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(seen{r.Method, r.RequestURI, r.Host, r.Header.Get("Cookie"), r.Header.Get("X-Custom"),
			r.Header.Get("X-Hop"), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Prefix"), r.Header.Get("User-Agent")})
	})
	gw := fpGateway(t, up)
	req, _ := http.NewRequest(http.MethodGet, gw.URL+"/p/"+fpSession+"/a%2Fb/c?x=1&y=%20z", nil)
	req.Host = "public.example"
	req.Header.Set("Cookie", "weird cookie value; plain=1")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("User-Agent", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got seen
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := seen{Method: "GET", URI: "/a%2Fb/c?x=1&y=%20z", Host: "public.example", Cookie: "weird cookie value; plain=1",
		Custom: "kept", XFF: "127.0.0.1", XFHost: "public.example", XFProto: "http", XFPrefix: "/p/" + fpSession}
	if got != want {
		t.Fatalf("upstream saw %+v\nwant %+v", got, want)
	}
}

func TestFastProxyResponseHeadersAndStatus(t *testing.T) {
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // no type at all
		w.Header().Add("Set-Cookie", "a=1; Path=/")
		w.Header().Add("Set-Cookie", "b=2; HttpOnly")
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "<html")
	})
	gw := fpGateway(t, up)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, gw.URL+"/p/"+fpSession+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("%s: status %d, want 418", method, resp.StatusCode)
		}
		// Both cookies are kept, each scoped to the session (path routing).
		want := "a=1; Path=/p/" + fpSession + "/|b=2; HttpOnly; Path=/p/" + fpSession + "/"
		if got := resp.Header.Values("Set-Cookie"); strings.Join(got, "|") != want {
			t.Errorf("%s: Set-Cookie %q", method, got)
		}
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q was invented", method, ct)
		}
		if resp.Header.Get("X-Private") != "" {
			t.Errorf("%s: a header named in Connection was forwarded", method)
		}
		if resp.ContentLength != 5 {
			t.Errorf("%s: Content-Length %d, want 5", method, resp.ContentLength)
		}
		wantBody := "<html"
		if method == http.MethodHead {
			wantBody = ""
		}
		if string(body) != wantBody {
			t.Errorf("%s: body %q, want %q", method, body, wantBody)
		}
	}
}

func TestFastProxyRequestBodies(t *testing.T) {
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Length", r.Header.Get("Content-Length"))
		w.Header().Set("X-Chunked", strings.Join(r.TransferEncoding, ","))
		_, _ = w.Write(b)
	})
	gw := fpGateway(t, up)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	cases := []struct {
		name    string
		body    io.Reader
		want    []byte
		chunked bool
	}{
		{"sized", bytes.NewReader(big), big, false},
		{"chunked", io.MultiReader(strings.NewReader("part one,"), strings.NewReader("part two")), []byte("part one,part two"), true},
	}
	for _, c := range cases {
		resp, err := http.Post(gw.URL+"/p/"+fpSession+"/echo", "application/octet-stream", c.body)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: echoed %d bytes, want %d", c.name, len(got), len(c.want))
		}
		if chunked := resp.Header.Get("X-Chunked") == "chunked"; chunked != c.chunked {
			t.Errorf("%s: upstream saw chunked=%v, want %v", c.name, chunked, c.chunked)
		}
	}
}

// A slow chunked response must reach the browser chunk by chunk: the
// first chunk is read before the app writes the second.
func TestFastProxyStreamsChunksAsWritten(t *testing.T) {
	next := make(chan struct{})
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := range 3 {
			_, _ = io.WriteString(w, "chunk\n")
			w.(http.Flusher).Flush()
			if i < 2 {
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
			}
		}
	})
	gw := fpGateway(t, up)
	resp, err := http.Get(gw.URL + "/p/" + fpSession + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := readLineWithin(br, 5*time.Second)
		if err != nil || line != "chunk\n" {
			t.Fatalf("chunk %d: %q, %v (a buffered proxy holds it back)", i, line, err)
		}
		if i < 2 {
			next <- struct{}{}
		}
	}
}

func readLineWithin(br *bufio.Reader, d time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := br.ReadString('\n'); ch <- res{s, err} }()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(d):
		return "", context.DeadlineExceeded
	}
}

// Server-sent events flow as sent, and a browser that leaves ends the
// upstream request too, rather than leaving it parked on an idle stream.
func TestFastProxyEventStreamEndsWithBrowser(t *testing.T) {
	upstreamGone := make(chan struct{})
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: hello\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upstreamGone)
	})
	gw := fpGateway(t, up)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.URL+"/p/"+fpSession+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := readLineWithin(br, 5*time.Second); err != nil || line != "data: hello\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-upstreamGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the app's request outlived the browser's")
	}
}

func TestFastProxyWebSocketEcho(t *testing.T) {
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	})
	gw := fpGateway(t, up)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(gw.URL, "http")+"/p/"+fpSession+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for _, m := range []string{"one", "two"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != m {
			t.Fatalf("echo of %q: %q, %v", m, got, err)
		}
	}
}

func TestFastProxyUpstreamDownIs502JSON(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	gw := fpGateway(t, dead)
	resp, err := http.Get(gw.URL + "/p/" + fpSession + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error messages.Error `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway || body.Error.Code != messages.CodeUnavailable {
		t.Fatalf("status %d, error %+v; want 502 unavailable", resp.StatusCode, body.Error)
	}
}

// Keep-alive to the app: many requests, one upstream connection, closed
// once idle so the app's TCP table shows no user.
func TestFastProxyReusesThenClosesUpstreamConnections(t *testing.T) {
	var opened, open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	gw := fpGateway(t, strings.TrimPrefix(srv.URL, "http://"))
	for range 50 {
		resp, err := http.Get(gw.URL + "/p/" + fpSession + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("50 sequential requests opened %d upstream connections, want 1", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := open.Load(); n != 0 {
		t.Errorf("%d upstream connections still open after the idle timeout", n)
	}
}

// Through the whole gateway: a registered session streams chunk by chunk,
// and an unknown one is a JSON 404.
func TestGatewayProxyStreamsAndRejectsUnknownSessions(t *testing.T) {
	next := make(chan struct{})
	_, up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Prefix-Seen", r.Header.Get("X-Forwarded-Prefix"))
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})
	e := newGWEnv(t, nil)
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Upstream: up, CreatedAt: time.Now()}
	if _, err := e.reg.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.srv.URL + "/p/" + s.ID + "/stream?q=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("X-Prefix-Seen"); got != "/p/"+s.ID {
		t.Errorf("app saw X-Forwarded-Prefix %q", got)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := readLineWithin(br, 5*time.Second); err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q, %v", line, err)
	}
	close(next)
	if line, err := readLineWithin(br, 5*time.Second); err != nil || line != "second\n" {
		t.Fatalf("second chunk: %q, %v", line, err)
	}

	resp, err = http.Get(e.srv.URL + "/p/" + messages.NewSessionID() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error messages.Error `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusNotFound || body.Error.Code != messages.CodeNotFound {
		t.Fatalf("unknown session: status %d, body %+v, %v", resp.StatusCode, body, err)
	}
}
