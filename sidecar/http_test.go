package sidecar

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

func TestHandlerStatus(t *testing.T) {
	dir := t.TempDir()
	tcp := writeTable(t, dir, "tcp",
		Conn{ap("0.0.0.0:3000"), ap("0.0.0.0:0"), StateListen},
		Conn{ap("10.0.0.1:3000"), ap("10.0.0.2:50000"), StateEstablished},
		Conn{ap("10.0.0.1:3000"), ap("10.0.0.2:50001"), StateEstablished},
		Conn{ap("10.0.0.1:3000"), ap("10.0.0.2:50002"), StateTimeWait})
	clock := newFakeClock()
	w := mustWatcher(t, 3000, clock.Now, Tables{TCP: tcp})
	srv := httptest.NewServer(Handler(w))
	defer srv.Close()

	res, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	var got messages.AppStatus
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if want := (messages.AppStatus{ActiveConnections: 2, Listening: true}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	// Each request is a fresh read: the clients leave, time passes.
	writeTable(t, dir, "tcp", Conn{ap("0.0.0.0:3000"), ap("0.0.0.0:0"), StateListen})
	get(t, srv.URL+"/status")
	clock.Advance(90 * time.Second)
	code, body := get(t, srv.URL+"/status")
	if code != http.StatusOK || body != `{"active_connections":0,"seconds_inactive":90,"listening":true}` {
		t.Errorf("after the clients left: %d %s", code, body)
	}
}

func TestHandlerReadError(t *testing.T) {
	dir := t.TempDir()
	tcp := filepath.Join(dir, "tcp")
	if err := os.WriteFile(tcp, []byte(header4+"\n   0: 0100007F:ZZZZ\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	Handler(mustWatcher(t, 3000, nil, Tables{TCP: tcp})).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var body struct {
		Error messages.Error `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%v in %s", err, rec.Body)
	}
	if body.Error.Code != messages.CodeInternal || !strings.Contains(body.Error.Message, "line 2") {
		t.Errorf("error body %s", rec.Body)
	}
}

func TestHandlerMethodsAndPaths(t *testing.T) {
	dir := t.TempDir()
	h := Handler(mustWatcher(t, 3000, nil, Tables{TCP: writeTable(t, dir, "tcp")}))
	tests := []struct {
		method, path string
		code         int
	}{
		{"GET", "/status", 200},
		{"HEAD", "/status", 200},
		{"POST", "/status", 405},
		{"DELETE", "/status", 405},
		{"GET", "/healthz", 200},
		{"PUT", "/healthz", 405},
		{"GET", "/status/extra", 404},
		{"GET", "/", 404},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.code {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.path, rec.Code, tt.code)
		}
		if tt.code == 405 {
			if rec.Header().Get("Allow") != "GET, HEAD" || !strings.Contains(rec.Body.String(), `"code":"bad_request"`) {
				t.Errorf("%s %s: Allow %q body %s", tt.method, tt.path, rec.Header().Get("Allow"), rec.Body)
			}
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, strings.TrimSpace(string(b))
}
