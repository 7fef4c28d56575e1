package gateway

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// scrape reads /metrics and returns each sample's value by its name and
// labels as the text format writes them, such as
// `spawner_proxy_requests_total{code="2xx"}`.
func scrape(t *testing.T, baseURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// readySession registers a ready session whose upstream is srv.
func (e *gwEnv) readySession(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	id := messages.NewSessionID()
	s := messages.Session{ID: id, Status: messages.StatusReady, Upstream: strings.TrimPrefix(srv.URL, "http://"), CreatedAt: time.Now()}
	if _, err := e.reg.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestProxyMetricsCountRequestsAndBytes(t *testing.T) {
	e := newGWEnv(t, nil)
	page := strings.Repeat("x", 5000)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, page+string(body))
	}))
	defer app.Close()
	id := e.readySession(t, app)

	before := scrape(t, e.srv.URL)
	resp, err := http.Post(e.srv.URL+"/p/"+id+"/echo", "text/plain", strings.NewReader(strings.Repeat("y", 3000)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 8000 {
		t.Fatalf("proxied answer is %d bytes, want 8000", len(got))
	}
	resp, err = http.Get(e.srv.URL + "/p/" + id + "/missing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := scrape(t, e.srv.URL)

	delta := func(k string) float64 { return after[k] - before[k] }
	if d := delta(`spawner_proxy_requests_total{code="2xx"}`); d != 1 {
		t.Errorf("2xx requests grew by %v, want 1", d)
	}
	if d := delta(`spawner_proxy_requests_total{code="4xx"}`); d != 1 {
		t.Errorf("4xx requests grew by %v, want 1", d)
	}
	if d := delta(`spawner_proxy_bytes_total{direction="in"}`); d != 3000 {
		t.Errorf("bytes in grew by %v, want the 3000 of the body", d)
	}
	if d := delta(`spawner_proxy_bytes_total{direction="out"}`); d < 8000 {
		t.Errorf("bytes out grew by %v, want at least 8000", d)
	}
}

func TestProxyMetricsTrackOpenWebSockets(t *testing.T) {
	e := newGWEnv(t, nil)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	defer app.Close()
	id := e.readySession(t, app)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/p/"+id+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("hello ", 200)
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, echo, err := conn.Read(ctx); err != nil || string(echo) != msg {
		t.Fatalf("echo through the proxy: %q, %v", echo, err)
	}
	open := scrape(t, e.srv.URL)
	if v := open["spawner_proxy_websockets_open"]; v != 1 {
		t.Errorf("open websockets = %v while one is open, want 1", v)
	}
	if v := open[`spawner_proxy_bytes_total{direction="in"}`]; v < float64(len(msg)) {
		t.Errorf("bytes in = %v, want at least the %d sent over the socket", v, len(msg))
	}
	conn.Close(websocket.StatusNormalClosure, "")

	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, e.srv.URL)
		if m["spawner_proxy_websockets_open"] == 0 && m[`spawner_proxy_requests_total{code="101"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after close: open=%v upgrades=%v, want 0 and 1", m["spawner_proxy_websockets_open"], m[`spawner_proxy_requests_total{code="101"}`])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newGWEnv(t, nil)
	e.mx.SpawnReady(1500 * time.Millisecond)
	m := scrape(t, e.srv.URL)
	if m[`spawner_spawn_duration_seconds_count{outcome="ready"}`] != 1 || m[`spawner_spawn_duration_seconds_bucket{outcome="ready",le="2.5"}`] != 1 {
		t.Errorf("the spawn latency histogram does not show a 1.5s spawn")
	}
	for _, name := range []string{"spawner_sessions{app=\"default\",status=\"ready\"}", "spawner_event_streams_open", "spawner_spawn_queue_depth", "spawner_spawns_in_flight", "spawner_probe_failures_total", "go_goroutines"} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	off := newGWEnv(t, func(_ *Config, d *Deps) { d.Metrics = nil })
	resp, err := http.Get(off.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics with metrics off: %d, want 404", resp.StatusCode)
	}
}

// BenchmarkProxyMetrics shows what measuring costs per proxied request:
// the same request through the gateway with metrics off and on.
func BenchmarkProxyMetrics(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true,"items":[1,2,3]}`)
	}))
	defer up.Close()
	env := bustest.Run(b)
	reg := registry.New(env.KV)
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady,
		Upstream: strings.TrimPrefix(up.URL, "http://"), CreatedAt: time.Now()}
	if _, err := reg.Create(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			deps := Deps{NATS: env.Conn, Registry: reg}
			if mode == "on" {
				deps.Metrics = metrics.New()
			}
			g, err := New(testConfig(time.Second), deps)
			if err != nil {
				b.Fatal(err)
			}
			g.routes.apply(s)
			srv := httptest.NewServer(g.Handler())
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			url := srv.URL + "/p/" + s.ID + "/api/items"
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
				}
			})
		})
	}
}
