package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gateway "github.com/spawnerhq/spawner/api-gateway"
)

// trickle sends a request whose body promises size bytes, then sends one
// byte every interval, as a slow-loris client does. It returns the
// gateway's answer, or an error if none came within wait.
func trickle(t *testing.T, base, head string, size int, interval, wait time.Duration) (*http.Response, time.Duration, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	start := time.Now()
	if _, err := io.WriteString(conn, head+"Host: gw.test\r\nContent-Length: "+itoa(size)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for range size {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	return resp, time.Since(start), err
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// A /init body trickled at a byte every 200 ms gets a JSON 408 once the
// body timeout passes, and nothing reaches the provisioners.
func TestInitBodyDeadline(t *testing.T) {
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.APIBodyTimeout = time.Second })
	rec := s.respond(t, s.subj.Requested(), func([]byte) any { return map[string]any{} })
	resp, took, err := trickle(t, s.base, "POST /init HTTP/1.1\r\n", 1000, 200*time.Millisecond, 10*time.Second)
	if err != nil {
		t.Fatalf("no answer to a trickled body after %s: %v", took, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"error"`) {
		t.Errorf("trickled /init: %d %s", resp.StatusCode, body)
	}
	if took > 5*time.Second {
		t.Errorf("answered after %s with a 1s body timeout", took)
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("%d spawn requests reached NATS", n)
	}
}

// A body trickled through the proxy is cut: by the idle limit when nothing
// comes, and by the minimum rate when a byte comes now and then. The app
// never receives the whole body, and a brisk upload still gets through.
func TestProxyCutsSlowBodies(t *testing.T) {
	var complete atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err == nil && int64(len(data)) == r.ContentLength {
			complete.Add(1)
		}
		_, _ = io.WriteString(w, "got "+itoa(len(data)))
	}))
	t.Cleanup(app.Close)
	s := newSiteWith(t, func(c *gateway.Config, d *gateway.Deps) { c.ProxyBodyIdle = time.Second; c.ProxyBodyMinRate = 100 })
	id := s.addReady(t, strings.TrimPrefix(app.URL, "http://"))
	for name, interval := range map[string]time.Duration{"silent": time.Hour, "a byte every 100ms": 100 * time.Millisecond} {
		resp, took, err := trickle(t, s.base, "POST /p/"+id+"/upload HTTP/1.1\r\n", 1000, interval, 10*time.Second)
		if err == nil {
			resp.Body.Close()
		} else if isTimeout(err) {
			t.Errorf("%s: the gateway still reads the body after %s", name, took)
			continue
		}
		if took > 5*time.Second {
			t.Errorf("%s: cut after %s, with a 1s idle limit", name, took)
		}
	}
	if n := complete.Load(); n != 0 {
		t.Errorf("the app received %d complete trickled bodies", n)
	}
	// 1000 bytes at 10 ms a byte is 100 bytes/s: kept, just.
	resp, took, err := trickle(t, s.base, "POST /p/"+id+"/upload HTTP/1.1\r\n", 200, 5*time.Millisecond, 10*time.Second)
	if err != nil {
		t.Fatalf("a brisk body: %v after %s", err, took)
	}
	defer resp.Body.Close()
	if body, err := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(body) != "got 200" {
		t.Errorf("a brisk body: %d %s (%v, after %s) %v", resp.StatusCode, body, err, took, resp.Header)
	}
}
