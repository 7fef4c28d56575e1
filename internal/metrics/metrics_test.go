package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// exposition returns what /metrics shows.
func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "/metrics", nil)
	rec := &recorder{header: http.Header{}}
	m.Handler().ServeHTTP(rec, req)
	if rec.status != 0 && rec.status != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.status)
	}
	return rec.body.String()
}

type recorder struct {
	header http.Header
	status int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(s int)           { r.status = s }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.SpawnStarted()
	m.SpawnDone()
	m.SpawnReady(time.Second)
	m.SpawnFailed(FailBackend, time.Second)
	m.TrackSpawnQueue(func() int { return 1 })
	m.SessionTerminated("demo", messages.ReasonIdle)
	m.KnowApps([]string{"demo"})
	m.Reaped(messages.ReasonIdle)
	m.Probed(time.Millisecond, true)
	m.ProxyAnswered(200)
	m.ProxyBytesIn(1)
	m.ProxyBytesOut(1)
	m.WebSocketOpened()
	m.WebSocketClosed()
	m.EventStreamOpened()
	m.EventStreamClosed()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m.WatchSessions(ctx, nil)
}

func TestObservationsShowOnTheHandler(t *testing.T) {
	m := New()
	m.SpawnReady(300 * time.Millisecond)
	m.SpawnFailed(FailTimeout, 61*time.Second)
	m.SpawnFailed(FailCapacity, 0)
	m.SpawnStarted()
	m.TrackSpawnQueue(func() int { return 7 })
	m.Reaped(messages.ReasonIdle)
	m.KnowApps([]string{"demo", "files"})
	m.SessionTerminated("files", messages.ReasonExited)
	m.Probed(3*time.Millisecond, true)
	m.ProxyAnswered(http.StatusSwitchingProtocols)
	m.ProxyAnswered(http.StatusBadGateway)
	m.ProxyBytesIn(10)
	m.ProxyBytesOut(20)
	m.WebSocketOpened()
	text := exposition(t, m)
	for _, want := range []string{
		`spawner_spawn_duration_seconds_bucket{outcome="ready",le="0.5"} 1`,
		`spawner_spawn_duration_seconds_bucket{outcome="failed",le="60"} 0`,
		`spawner_spawn_duration_seconds_count{outcome="failed"} 1`,
		`spawner_spawn_failures_total{reason="timeout"} 1`,
		`spawner_spawn_failures_total{reason="capacity"} 1`,
		`spawner_spawns_in_flight 1`,
		`spawner_spawn_queue_depth 7`,
		`spawner_reaps_total{reason="idle"} 1`,
		`spawner_sessions_terminated_total{app="files",reason="exited"} 1`,
		`spawner_sessions_terminated_total{app="demo",reason="exited"} 0`,
		`spawner_sessions{app="files",status="ready"} 0`,
		`spawner_probe_failures_total 1`,
		`spawner_probe_duration_seconds_count 1`,
		`spawner_proxy_requests_total{code="101"} 1`,
		`spawner_proxy_requests_total{code="5xx"} 1`,
		`spawner_proxy_bytes_total{direction="in"} 10`,
		`spawner_proxy_bytes_total{direction="out"} 20`,
		`spawner_proxy_websockets_open 1`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	m.TrackSpawnQueue(nil)
	if text := exposition(t, m); !strings.Contains(text, "spawner_spawn_queue_depth 0") {
		t.Error("the queue depth stays after tracking stopped")
	}
}

func TestWatchSessionsCountsTheRegistry(t *testing.T) {
	env := bustest.Run(t)
	reg := registry.New(env.KV)
	m := New()
	ctx, cancel := context.WithCancel(t.Context())
	cache := registry.NewCache(reg, nil, slog.New(slog.DiscardHandler))
	done := make(chan error, 2)
	go func() { done <- cache.Run(ctx) }()
	go func() { m.WatchSessions(ctx, cache); done <- nil }()

	gauge := func(status messages.Status) string {
		re := regexp.MustCompile(`spawner_sessions\{app="files",status="` + string(status) + `"\} (\d+)`)
		if mm := re.FindStringSubmatch(exposition(t, m)); mm != nil {
			return mm[1]
		}
		return "absent"
	}
	await := func(creating, ready string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for gauge(messages.StatusCreating) != creating || gauge(messages.StatusReady) != ready {
			if time.Now().After(deadline) {
				t.Fatalf("creating=%s ready=%s, want %s and %s", gauge(messages.StatusCreating), gauge(messages.StatusReady), creating, ready)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a := messages.Session{ID: messages.NewSessionID(), App: "files", Status: messages.StatusCreating, CreatedAt: time.Now()}
	b := messages.Session{ID: messages.NewSessionID(), App: "files", Status: messages.StatusReady, CreatedAt: time.Now()}
	revA, err := reg.Create(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	await("1", "1")
	a.Status = messages.StatusReady
	if _, err := reg.Update(ctx, a, revA); err != nil {
		t.Fatal(err)
	}
	await("0", "2")
	if err := reg.Delete(ctx, b.ID, 0); err != nil {
		t.Fatal(err)
	}
	await("0", "1")
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestServeAnswersUntilCancelled(t *testing.T) {
	m := New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln, slog.New(slog.DiscardHandler)) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "spawner_spawns_in_flight") {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The example dashboard and rules may name only metrics that exist.
func TestMonitoringExamplesNameRealMetrics(t *testing.T) {
	known := map[string]bool{}
	m := New()
	m.KnowApps([]string{"default"}) // As every gateway and provisioner does.
	for _, line := range strings.Split(exposition(t, m), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			known[strings.Fields(name)[0]] = true
		}
	}
	files, _ := filepath.Glob("../../deploy/monitoring/*")
	if len(files) < 3 {
		t.Fatalf("found %v, want the dashboard, scrape config and rules", files)
	}
	name := regexp.MustCompile(`spawner_[a-z_]+`)
	seen := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(data), -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if !known[base] {
				t.Errorf("%s names %s, which Spawner does not export", filepath.Base(f), n)
			}
			seen++
		}
	}
	if seen < 10 {
		t.Errorf("the examples name only %d metrics", seen)
	}
}
