package demo

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/spawnerhq/spawner/messages"
)

func TestStatusCountsConnections(t *testing.T) {
	app, srv, clock := start(t)

	st := getStatus(t, srv.URL)
	if st != (messages.AppStatus{Listening: true}) {
		t.Fatalf("fresh status = %+v", st)
	}
	clock.Advance(7 * time.Second)
	if got := getStatus(t, srv.URL).SecondsInactive; got != 7 {
		t.Fatalf("seconds_inactive before any connection = %d, want 7 (since start)", got)
	}

	a := dial(t, wsURL(t, srv.URL)+"/ws")
	next(t, a, presence(1))
	b := dial(t, wsURL(t, srv.URL)+"/ws")
	next(t, b, presence(2))
	next(t, a, presence(2))

	clock.Advance(100 * time.Second)
	st = getStatus(t, srv.URL)
	if st.ActiveConnections != 2 || st.SecondsInactive != 0 || !st.Listening {
		t.Fatalf("with two clients status = %+v", st)
	}

	if err := a.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	next(t, b, presence(1))
	if st := getStatus(t, srv.URL); st.ActiveConnections != 1 || st.SecondsInactive != 0 {
		t.Fatalf("with one client status = %+v", st)
	}

	if err := b.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no active connections", func() bool { return getStatus(t, srv.URL).ActiveConnections == 0 })
	if got := getStatus(t, srv.URL).SecondsInactive; got != 0 {
		t.Fatalf("seconds_inactive right after last close = %d", got)
	}
	clock.Advance(42*time.Second + 900*time.Millisecond)
	if got := getStatus(t, srv.URL).SecondsInactive; got != 42 {
		t.Fatalf("seconds_inactive = %d, want 42 whole seconds since the last close", got)
	}
	waitHandlers(t, app)
}

func TestEditsAndChatAreBroadcast(t *testing.T) {
	app, srv, _ := start(t)
	a := dial(t, wsURL(t, srv.URL)+"/ws")
	hello := next(t, a, func(m wire) bool { return m.Type == "hello" })
	b := dial(t, wsURL(t, srv.URL)+"/ws")
	next(t, b, presence(2))
	next(t, a, presence(2))

	send(t, a, map[string]any{"type": "text", "text": "hello ✓", "version": 0})
	got := next(t, b, func(m wire) bool { return m.Type == "text" })
	if got.Text != "hello ✓" || got.Version != 1 {
		t.Fatalf("b received %+v", got)
	}
	// The sender gets an ack, not its own text back.
	ack := next(t, a, func(m wire) bool { return m.Type == "ack" || m.Type == "text" })
	if ack.Type != "ack" || ack.Version != 1 {
		t.Fatalf("a received %+v, want ack of version 1", ack)
	}

	send(t, b, map[string]any{"type": "text", "text": "reply", "version": 1})
	if got := next(t, a, func(m wire) bool { return m.Type == "text" }); got.Text != "reply" || got.Version != 2 {
		t.Fatalf("a received %+v", got)
	}

	// Notes far beyond the library's 32 KiB default must still sync.
	large := strings.Repeat("line of a long note\n", 200<<10/20)
	send(t, b, map[string]any{"type": "text", "text": large, "version": 2})
	if got := next(t, a, func(m wire) bool { return m.Type == "text" }); got.Text != large || got.Version != 3 {
		t.Fatalf("large note did not arrive intact (version %d, %d bytes)", got.Version, len(got.Text))
	}
	send(t, b, map[string]any{"type": "text", "text": "reply", "version": 3})
	next(t, a, func(m wire) bool { return m.Type == "text" && m.Version == 4 })

	send(t, a, map[string]any{"type": "chat", "text": "  hi there  "})
	for _, c := range []*websocket.Conn{a, b} {
		m := next(t, c, func(m wire) bool { return m.Type == "chat" })
		if m.Text != "hi there" || m.From != hello.Name {
			t.Fatalf("chat = %+v, want from %q", m, hello.Name)
		}
	}

	// A newcomer starts from the current note and sees the chat so far.
	c := dial(t, wsURL(t, srv.URL)+"/ws")
	if got := next(t, c, func(m wire) bool { return m.Type == "text" }); got.Text != "reply" || got.Version != 4 {
		t.Fatalf("newcomer got %+v", got)
	}
	next(t, c, func(m wire) bool { return m.Type == "chat" && m.Text == "hi there" })

	for _, conn := range []*websocket.Conn{a, b, c} {
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	waitHandlers(t, app)
}

func TestPageWorksUnderPathPrefix(t *testing.T) {
	t.Setenv("SPAWNER_SESSION_ID", `<b>id&"x"</b>`)
	t.Setenv("SPAWNER_SESSION_URL", "https://spawner.example/p/abc/")
	app := New(Config{}, newFakeClock().Now, testLogger(t))
	mux := http.NewServeMux()
	mux.Handle("/p/abc/", http.StripPrefix("/p/abc", app.Handler()))
	srv := serve(t, app, mux)

	page := srv.URL + "/p/abc/"
	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("page: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("page Content-Type = %q", ct)
	}
	html := string(body)
	if strings.Contains(html, `<b>id`) {
		t.Fatal("session id is not HTML-escaped")
	}
	if !strings.Contains(html, "&lt;b&gt;id&amp;&#34;x&#34;&lt;/b&gt;") {
		t.Fatal("escaped session id missing from the page")
	}
	if !strings.Contains(html, "https://spawner.example/p/abc/") {
		t.Fatal("session URL missing from the page")
	}
	if !strings.Contains(html, "new URL('ws', location.href)") {
		t.Fatal("page does not build its socket URL relative to itself")
	}
	for _, abs := range []string{`"/ws"`, `'/ws'`, "`/ws`", "host + '/ws", `host + "/ws`} {
		if strings.Contains(html, abs) {
			t.Fatalf("page refers to the socket by absolute path %s", abs)
		}
	}
	for _, ext := range []string{"<script src", "<link rel=\"stylesheet\"", "cdn"} {
		if strings.Contains(strings.ToLower(html), strings.ToLower(ext)) {
			t.Fatalf("page is not self-contained: found %q", ext)
		}
	}

	// Resolve "ws" against the page the way the browser does, and make sure
	// a socket is really served there.
	base, _ := url.Parse(page)
	ref, _ := url.Parse("ws")
	resolved := base.ResolveReference(ref)
	if resolved.Path != "/p/abc/ws" {
		t.Fatalf("relative socket URL resolves to %s", resolved.Path)
	}
	conn := dial(t, wsURL(t, resolved.String()))
	next(t, conn, presence(1))
	if st := getStatus(t, srv.URL+"/p/abc"); st.ActiveConnections != 1 {
		t.Fatalf("status under prefix = %+v", st)
	}
	if resp, err := http.Get(srv.URL + "/p/abc/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz under prefix: %v %v", resp, err)
	}
	_ = conn.Close(websocket.StatusNormalClosure, "")
	waitHandlers(t, app)
}
