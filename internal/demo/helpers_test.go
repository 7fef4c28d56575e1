package demo

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/spawnerhq/spawner/messages"
)

// patience bounds every wait in these tests; it is generous because a
// loaded machine running -race can be very slow, while a real hang is not
// rescued by any timeout.
const patience = 20 * time.Second

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter routes logs to the test so they appear only on failure.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func start(t *testing.T) (*App, *httptest.Server, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	app := New(Config{}, clock.Now, testLogger(t))
	return app, serve(t, app, app.Handler()), clock
}

// serve runs h for the test and, once the test's clients have closed,
// waits for the app's handlers so none logs after the test has ended.
func serve(t *testing.T, app *App, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { waitHandlers(t, app) })
	return srv
}

func wsURL(t *testing.T, httpURL string) string {
	t.Helper()
	u, err := url.Parse(httpURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	return u.String()
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	conn.SetReadLimit(4 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn
}

type wire struct {
	Type    string `json:"type"`
	Text    string `json:"text"`
	Version int64  `json:"version"`
	Count   int    `json:"count"`
	Name    string `json:"name"`
	From    string `json:"from"`
}

// next reads messages until one satisfies ok, failing after a timeout.
func next(t *testing.T, conn *websocket.Conn, ok func(wire) bool) wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m wire
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("bad message %q: %v", data, err)
		}
		if ok(m) {
			return m
		}
	}
}

func presence(n int) func(wire) bool {
	return func(m wire) bool { return m.Type == "presence" && m.Count == n }
}

func send(t *testing.T, conn *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func getStatus(t *testing.T, base string) messages.AppStatus {
	t.Helper()
	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status Content-Type = %q", ct)
	}
	var st messages.AppStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitHandlers fails unless every WebSocket handler, and so every goroutine
// it started, has returned.
func waitHandlers(t *testing.T, app *App) {
	t.Helper()
	done := make(chan struct{})
	go func() { app.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatal("WebSocket handlers still running after clients left")
	}
}
