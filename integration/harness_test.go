// Package integration runs Spawner end to end: the same wiring as the
// binary, real NATS, real processes, real HTTP and WebSocket clients.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// spawnerBin is the spawner binary built once for the whole suite; the
// process backend runs "<bin> demo" as each session's app.
var spawnerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spawner-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spawnerBin = filepath.Join(dir, "spawner")
	build := exec.Command("go", "build", "-o", spawnerBin, "../cmd/spawner")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spawner: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// harness is one running all-in-one Spawner.
type harness struct {
	Main    *app.Main
	BaseURL string
	NC      *nats.Conn
	Subj    messages.Subjects
	cancel  context.CancelFunc
	done    chan error
}

// testConfig is the all-in-one configuration tests start from: random
// ports, a private data dir, quick probes.
func testConfig(t testing.TB) app.Config {
	t.Helper()
	for _, kv := range os.Environ() {
		// The developer's own SPAWNER_ settings must not leak into tests.
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") && name != "SPAWNER_TEST_KUBECONFIG" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Common.DataDir = t.TempDir()
	cfg.Bus.Listen = "127.0.0.1:-1"
	cfg.Gateway.HTTPAddr = "127.0.0.1:0"
	// The gateway reports proxy activity as often as the prober probes;
	// both read SPAWNER_PROBE_INTERVAL.
	cfg.Prober.ProbeInterval, cfg.Gateway.ProbeInterval = 500*time.Millisecond, 500*time.Millisecond
	cfg.Provisioner.SpawnTimeout = 20 * time.Second
	cfg.Gateway.SpawnTimeout = 20 * time.Second
	cfg.Provisioner.Reconcile = 2 * time.Second
	return cfg
}

// start runs cfg until the test ends and connects a NATS client to it.
func start(t testing.TB, cfg app.Config) *harness {
	t.Helper()
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Common.LogLevel))
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	m := app.NewMain(cfg, log)
	m.DemoCommand = spawnerBin + " demo"
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{Main: m, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- m.Run(ctx, app.ModeAll) }()
	select {
	case <-m.Started():
	case err := <-h.done:
		t.Fatalf("spawner exited at start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("spawner did not start within 20s")
	}
	h.BaseURL = "http://" + m.HTTPAddr()
	// A client, as another service would connect: it may spawn and read
	// events, nothing more.
	nc, err := bus.Connect(m.NATSConfig(bus.RoleClient), bus.RoleClient, "test", nil, log)
	if err != nil {
		t.Fatal(err)
	}
	h.NC = nc
	h.Subj, _ = messages.NewSubjects(cfg.Bus.Prefix)
	t.Cleanup(func() { h.Stop(t) })
	return h
}

// Stop shuts Spawner down as SIGTERM would and waits for it.
func (h *harness) Stop(t testing.TB) {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("spawner exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("spawner did not stop within 15s")
	}
	h.NC.Close()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// events collects lifecycle events from a plain NATS subscription.
type events struct {
	mu  sync.Mutex
	all []messages.Event
	sub *nats.Subscription
}

func (h *harness) watchEvents(t testing.TB) *events {
	t.Helper()
	ev := &events{}
	sub, err := h.NC.Subscribe(h.Subj.Sessions(), func(m *nats.Msg) {
		var e messages.Event
		if json.Unmarshal(m.Data, &e) == nil && e.SessionID != "" {
			ev.mu.Lock()
			ev.all = append(ev.all, e)
			ev.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	ev.sub = sub
	return ev
}

// find returns the events of one type for one session.
func (ev *events) find(id string, typ messages.EventType) []messages.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []messages.Event
	for _, e := range ev.all {
		if e.SessionID == id && e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// post sends a JSON body and decodes the JSON answer.
func post(t testing.TB, url, body string, out any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("POST %s: %d %q is not JSON: %v", url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// get fetches a URL and returns its status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// appProcesses lists the running demo apps started by this test binary's
// spawner build, found by their command line.
func appProcesses(t testing.TB, sessionIDs ...string) []string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, id := range sessionIDs {
			if strings.Contains(string(env), "SPAWNER_SESSION_ID="+id+"\x00") {
				out = append(out, e.Name()+":"+id)
			}
		}
	}
	return out
}
