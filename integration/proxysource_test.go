package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The proxy status source, with apps that know nothing of Spawner: plain
// "python3 -m http.server" (no /status, no sidecar) and the demo's
// WebSocket. What keeps a session alive is what the gateway sees.
func TestProxyStatusSource(t *testing.T) {
	const (
		idle     = 5 * time.Second
		interval = time.Second
		size     = 60 << 20
	)
	dir := servedDir(t, "big.bin", size)
	proxied := func(t *testing.T, command string) *harness {
		cfg := testConfig(t)
		cfg.Process.Command = command
		cfg.Process.StatusSource = "proxy"
		cfg.Provisioner.IdleTimeout = idle
		cfg.Prober.ProbeInterval, cfg.Gateway.ProbeInterval = interval, interval
		return start(t, cfg)
	}
	// Idle time is counted in whole seconds, so the bound is the issue's
	// idle timeout + probe interval + 1 s.
	bound := idle + interval + time.Second

	t.Run("a slow download keeps its session", func(t *testing.T) {
		h := proxied(t, `cd `+dir+` && exec `+debianPython+` -m http.server "$PORT" --bind "$HOST"`)
		id, url := spawnURL(t, h, `{}`)
		resp, err := http.Get(url + "big.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 64<<10)
		var got int
		lastCheck := time.Now()
		// Read at 1 MB/s: 60 s, twelve idle timeouts.
		for start := time.Now(); ; {
			n, err := io.ReadFull(resp.Body, buf)
			got += n
			if err != nil {
				if got != size {
					t.Fatalf("the download broke after %d of %d bytes: %v", got, size, err)
				}
				break
			}
			if time.Since(lastCheck) > interval {
				lastCheck = time.Now()
				if sessionGone(t, h, id) {
					t.Fatalf("the session was reaped %s into the download, with %d bytes read", time.Since(start), got)
				}
			}
			if wait := time.Duration(got) * time.Second / (1 << 20); time.Since(start) < wait {
				time.Sleep(wait - time.Since(start))
			}
		}
		ended := time.Now()
		eventually(t, bound+5*time.Second, "the session to end after the download", func() bool { return sessionGone(t, h, id) })
		if took := time.Since(ended); took > bound {
			t.Errorf("the session ended %s after the download, want within %s", took, bound)
		}
	})

	t.Run("an open WebSocket keeps its session", func(t *testing.T) {
		h := proxied(t, "") // the demo app, with its WebSocket
		id, url := spawnURL(t, h, `{}`)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Drain whatever the app sends, without sending anything.
		go func() {
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		}()
		time.Sleep(idle + 3*interval)
		if sessionGone(t, h, id) {
			t.Fatal("a session with an open WebSocket was reaped")
		}
		_ = conn.Close(websocket.StatusNormalClosure, "")
		closed := time.Now()
		eventually(t, bound+5*time.Second, "the session to end after the WebSocket closed", func() bool { return sessionGone(t, h, id) })
		if took := time.Since(closed); took > bound {
			t.Errorf("the session ended %s after its WebSocket closed, want within %s", took, bound)
		}
	})
}
