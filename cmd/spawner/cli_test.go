package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
)

// TestMain lets the test binary double as the session app: the process
// backend runs "<test binary> demo", as it runs "spawner demo".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		if err := run(context.Background(), "demo", nil); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startSpawner runs the all-in-one on random ports and points the CLI at it.
func startSpawner(t *testing.T) string {
	t.Helper()
	return startSpawnerWith(t, nil)
}

// startSpawnerWith is startSpawner with tune applied to the settings.
func startSpawnerWith(t *testing.T, tune func(*app.Config)) string {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") {
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
	if tune != nil {
		tune(&cfg)
	}
	m := app.NewMain(cfg, slog.New(slog.DiscardHandler))
	m.DemoCommand = "'" + os.Args[0] + "' demo"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, app.ModeAll) }()
	select {
	case <-m.Started():
	case err := <-done:
		t.Fatalf("spawner exited at start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("spawner did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spawner: %v", err)
		}
	})
	url := "http://" + m.HTTPAddr()
	t.Setenv("SPAWNER_API_URL", url)
	return url
}

// cli runs a verb as main would and returns its standard output.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var err error
	switch args[0] {
	case "sessions":
		err = runSessions(ctx, args[1:], &out, &errOut)
	case "events":
		err = runEvents(ctx, args[1:], &out, &errOut)
	case "apps":
		err = runApps(ctx, args[1:], &out, &errOut)
	default:
		t.Fatalf("no verb %q", args[0])
	}
	return out.String(), err
}

func TestSessionsVerbsAgainstARunningSpawner(t *testing.T) {
	startSpawner(t)
	out, err := cli(t, "sessions", "new", "--key", "cli-test", "--label", "team=blue", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Created || rep.Status != messages.StatusReady {
		t.Fatalf("new -o json printed %q (%v), want a created, ready session", out, err)
	}
	id := rep.SessionID

	out, err = cli(t, "sessions", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "STATUS") {
		t.Fatalf("ls printed %q, want a header and one row", out)
	}
	for _, want := range []string{id, "ready", "cli-test", rep.URL} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("ls row %q lacks %q", lines[1], want)
		}
	}

	// Every pool's sessions: this gateway answers for its own pool over
	// NATS, as a hub's pools would.
	out, err = cli(t, "sessions", "ls", "--pool", "*")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 || !strings.Contains(lines[0], "POOL") ||
		!strings.Contains(lines[1], id) {
		t.Errorf("ls --pool '*' printed %q (%v), want a header with POOL and the session", out, err)
	}

	out, err = cli(t, "sessions", "ls", "-o", "json")
	var list []struct {
		ID     string            `json:"session_id"`
		Labels map[string]string `json:"labels"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != id || list[0].Labels["team"] != "blue" {
		t.Fatalf("ls -o json printed %q (%v)", out, err)
	}

	out, err = cli(t, "sessions", "get", id)
	if err != nil || !strings.Contains(out, "Status:") || !strings.Contains(out, "ready") || !strings.Contains(out, "Label team:") {
		t.Fatalf("get printed %q (%v)", out, err)
	}

	out, err = cli(t, "events", "--no-follow")
	if err != nil || !strings.Contains(out, "creating") || !strings.Contains(out, "ready") || !strings.Contains(out, id) {
		t.Fatalf("events --no-follow printed %q (%v)", out, err)
	}

	// Flags may follow the id.
	out, err = cli(t, "sessions", "rm", id, "-o", "table")
	if err != nil || strings.TrimSpace(out) != "ended "+id {
		t.Fatalf("rm printed %q (%v)", out, err)
	}
	out, err = cli(t, "events", "--session", id)
	if err != nil || !strings.Contains(out, "terminated") || !strings.Contains(out, "deleted") {
		t.Fatalf("events --session of an ended session printed %q (%v), want its history ending in terminated", out, err)
	}
	if out, _ := cli(t, "sessions", "ls"); strings.Contains(out, id) {
		t.Errorf("ls after rm still shows %s:\n%s", id, out)
	}
	if _, err := cli(t, "sessions", "rm", id); err == nil {
		t.Error("rm of an ended session succeeded")
	}
}

func TestCLIRejectsBadUsage(t *testing.T) {
	t.Setenv("SPAWNER_API_URL", "http://127.0.0.1:1")
	for _, args := range [][]string{
		{"sessions", "frob"},
		{"sessions", "get"},
		{"sessions", "ls", "extra"},
		{"sessions", "ls", "-o", "yaml"},
		{"sessions", "new", "--label", "novalue"},
		{"sessions", "new", "--idle-timeout", "soon"},
		{"sessions", "rm"},
		{"sessions", "get", "--api", "localhost:8080", "x"},
		{"events", "--replay", "-3"},
		{"events", "stray"},
	} {
		if _, err := cli(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
	out, err := cli(t, "sessions")
	if err != nil || !strings.Contains(out, "sessions ls") {
		t.Errorf("sessions with no verb: %q (%v), want the usage", out, err)
	}
}

func TestCLISendsTheToken(t *testing.T) {
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"sessions":[],"count":0}`))
	}))
	defer srv.Close()
	t.Setenv("SPAWNER_API_TOKEN", "from-env")
	if _, err := cli(t, "sessions", "ls", "--api", srv.URL); err != nil || auth != "Bearer from-env" {
		t.Errorf("with SPAWNER_API_TOKEN: auth %q (%v)", auth, err)
	}
	if _, err := cli(t, "sessions", "ls", "--api", srv.URL, "--token", "from-flag"); err != nil || auth != "Bearer from-flag" {
		t.Errorf("with --token: auth %q (%v)", auth, err)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", 59 * time.Second: "59s", 61 * time.Second: "1m1s",
		3*time.Hour + 20*time.Minute: "3h20m", 50 * time.Hour: "2d2h",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
