package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// slowApp serves plain HTTP with no /status: "/" answers at once and
// "/slow" streams one line a second for $SLOW_SECONDS seconds.
const slowApp = `exec python3 -c '
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if self.path.startswith("/slow"):
            for i in range(int(os.environ.get("SLOW_SECONDS", "14"))):
                self.wfile.write(b"tick %d\n" % i); self.wfile.flush(); time.sleep(1)
        else:
            self.wfile.write(b"plain app\n")
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'`

// TestSidecarKeepsStreamingSessionAlive is the sidecar's promise: an app
// with no /status is kept alive while a response streams through the
// proxy, and reaped shortly after the stream ends.
func TestSidecarKeepsStreamingSessionAlive(t *testing.T) {
	cfg := testConfig(t)
	cfg.Process.StatusSource = "sidecar"
	cfg.Process.Command = slowApp
	cfg.Provisioner.IdleTimeout = 4 * time.Second
	cfg.Prober.ProbeInterval = time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"env":{"SLOW_SECONDS":"14"}}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	code, body := get(t, rep.URL)
	if code != http.StatusOK || body != "plain app\n" {
		t.Fatalf("GET %s: %d %q", rep.URL, code, body)
	}
	// The app has no /status of its own: the proxy must not invent one.
	if code, _ := get(t, rep.URL+"status"); code != http.StatusOK {
		t.Logf("the plain app answers /status with %d, as it should: it is its own", code)
	}

	resp, err := http.Get(rep.URL + "slow")
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines++
	}
	resp.Body.Close()
	if lines != 14 {
		t.Fatalf("the stream was cut after %d of 14 lines (reaped while streaming?)", lines)
	}
	streamEnd := time.Now()
	if got := ev.find(rep.SessionID, messages.EventTerminated); len(got) != 0 {
		t.Fatalf("reaped during the stream: %+v", got)
	}
	eventually(t, 12*time.Second, "the session to be reaped after the stream", func() bool {
		return len(ev.find(rep.SessionID, messages.EventTerminated)) == 1
	})
	took := time.Since(streamEnd)
	if got := ev.find(rep.SessionID, messages.EventTerminated)[0].Reason; got != messages.ReasonIdle {
		t.Fatalf("reason %q, want idle", got)
	}
	if took < 3*time.Second {
		t.Fatalf("reaped %s after the stream ended, before its 4s idle timeout", took)
	}
	t.Logf("reaped %s after the stream ended (idle timeout 4s, probes every 1s)", took.Round(100*time.Millisecond))
	eventually(t, 5*time.Second, "the app process to exit", func() bool { return len(appProcesses(t, rep.SessionID)) == 0 })
}

// TestSidecarIgnoresProxyKeepAlive proves the proxy's pooled connection to
// an app does not count as a user for long: with requests every half
// second the session lives, and once they stop it is reaped although the
// proxy kept a keep-alive connection open at that moment.
func TestSidecarIgnoresProxyKeepAlive(t *testing.T) {
	cfg := testConfig(t)
	cfg.Process.StatusSource = "sidecar"
	// An HTTP/1.1 app keeps connections open, unlike python's default.
	cfg.Process.Command = strings.Replace(slowApp, "class H(http.server.BaseHTTPRequestHandler):", "class H(http.server.BaseHTTPRequestHandler):\n    protocol_version = \"HTTP/1.1\"", 1)
	cfg.Process.Command = strings.Replace(cfg.Process.Command, `self.send_header("Content-Type", "text/plain")`, `self.send_header("Content-Type", "text/plain"); self.send_header("Content-Length", "10")`, 1)
	cfg.Provisioner.IdleTimeout = 3 * time.Second
	cfg.Prober.ProbeInterval = 500 * time.Millisecond
	h := start(t, cfg)
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d", code)
	}
	client := &http.Client{}
	for range 12 {
		resp, err := client.Get(rep.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("session ended while in use: %d", resp.StatusCode)
		}
		time.Sleep(500 * time.Millisecond)
	}
	code, body := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
	var view struct {
		ActiveConnections *int `json:"active_connections"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &view) != nil {
		t.Fatalf("session: %d %s", code, body)
	}
	eventually(t, 10*time.Second, "the session to be reaped once requests stop", func() bool {
		code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
		return code == http.StatusNotFound
	})
}
