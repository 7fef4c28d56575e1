package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/messages"
)

// rawExchange sends one request on conn and reads its answer.
func rawExchange(t *testing.T, conn net.Conn, br *bufio.Reader, method, path, host string) (*http.Response, string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(patience))
	if _, err := io.WriteString(conn, method+" "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// A browser keeps one connection per origin, so a connection that opened
// on a session may carry the API next, and the API's answers must not
// change with the server that holds the connection.
func TestOneConnectionCarriesSessionsAndTheAPI(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app saw "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	s := newSite(t)
	id := s.addReady(t, strings.TrimPrefix(app.URL, "http://"))
	s.awaitListed(t, id)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i, step := range []struct{ method, path, want string }{
		{"GET", "/p/" + id + "/a", "app saw /a"},
		{"GET", "/sessions", `"count":1`},
		{"GET", "/p/" + id + "/b", "app saw /b"},
		{"GET", "/p/" + id, ""},            // the redirect to the trailing slash
		{"GET", "/nowhere", `"not_found"`}, // the API's JSON 404
		{"GET", "/p/" + id + "/c", "app saw /c"},
	} {
		resp, body := rawExchange(t, conn, br, step.method, step.path, "gw.test")
		if !strings.Contains(body, step.want) {
			t.Errorf("step %d %s: %d %q, want it to hold %q", i, step.path, resp.StatusCode, body, step.want)
		}
		if step.want == "" && resp.StatusCode != http.StatusPermanentRedirect {
			t.Errorf("step %d %s: %d, want 308", i, step.path, resp.StatusCode)
		}
	}
}

// Under subdomain routing the connection is sorted by its Host header; the
// API's host still reaches the API.
func TestSubdomainConnectionsAreSortedByHost(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app saw "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	s := newSiteWith(t, func(c *gateway.Config, _ *gateway.Deps) {
		c.Routing, c.SessionDomain = string(messages.RoutingSubdomain), "sessions.test"
	})
	id := s.addReady(t, strings.TrimPrefix(app.URL, "http://"))
	s.awaitListed(t, id, "Host", "api.test")
	for _, host := range []string{id + ".sessions.test", "api.test"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, body := rawExchange(t, conn, br, "GET", "/x", host)
		if host == "api.test" {
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("API host /x: %d %q", resp.StatusCode, body)
			}
			if _, body = rawExchange(t, conn, br, "GET", "/sessions", host); !strings.Contains(body, `"count":1`) {
				t.Errorf("API host /sessions: %q", body)
			}
		} else if body != "app saw /x" {
			t.Errorf("session host: %d %q", resp.StatusCode, body)
		}
		conn.Close()
	}
}

// A streamed answer reaches the browser as the app writes it: its head at
// once, each event when it is sent, not when the stream ends.
func TestFastPathStreamsAsTheAppWrites(t *testing.T) {
	release := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
	}))
	t.Cleanup(app.Close)
	t.Cleanup(func() { close(release) })
	s := newSite(t)
	id := s.addReady(t, strings.TrimPrefix(app.URL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/p/"+id+"/events", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("the head did not come before the first event: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	release <- struct{}{}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
}

// Requests in flight on a session connection finish during the drain;
// new connections are refused once it starts.
func TestDrainFinishesSessionRequests(t *testing.T) {
	started := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "finished")
	}))
	t.Cleanup(app.Close)
	env := newSite(t)
	id := env.addReady(t, strings.TrimPrefix(app.URL, "http://"))
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(env.base + "/p/" + id + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(body)
	}()
	<-started
	env.stopNow()
	if body := <-got; body != "finished" {
		t.Errorf("the request in flight got %q", body)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(env.base, "http://"), time.Second); err == nil {
		t.Error("a connection was accepted after the drain")
	}
}
