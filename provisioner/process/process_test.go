package process_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
)

func TestDemoAppStartsReady(t *testing.T) {
	b := newBackend(t, process.Config{})
	runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id, URL: "http://gw/p/" + id + "/"})
	if inst.SessionID != id || inst.StatusURL != "http://"+inst.Upstream+"/status" || !strings.HasPrefix(inst.Handle, "pid:") {
		t.Errorf("instance = %+v", inst)
	}
	host, _, err := net.SplitHostPort(inst.Upstream)
	if err != nil || host != "127.0.0.1" {
		t.Errorf("upstream %q is not on loopback", inst.Upstream)
	}
	var st messages.AppStatus
	getJSON(t, inst.StatusURL, &st)
	if !st.Listening {
		t.Errorf("/status = %+v", st)
	}
	resp, err := http.Get("http://" + inst.Upstream + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(page) == 0 {
		t.Errorf("GET / = %s with %d bytes", resp.Status, len(page))
	}
	pgid := pidOf(t, inst)
	if err := b.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	awaitDead(t, "the demo app", func() bool { return len(liveInGroup(pgid)) > 0 })
	if _, err := net.DialTimeout("tcp", inst.Upstream, time.Second); err == nil {
		t.Error("the app's port still accepts connections after Stop")
	}
}

// It follows the app through pids its shell writes down, which a PID
// namespace would renumber, so it runs unisolated: the group kill it
// tests is what ends an app there.
func TestAppExitingAtOnceFails(t *testing.T) {
	dir := t.TempDir()
	b := newBackend(t, process.Config{Isolation: "none", Command: "echo $$ > " + quote(filepath.Join(dir, "pgid")) + "; echo starting; exit 3"})
	runBackend(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := b.Start(ctx, provisioner.Spec{SessionID: messages.NewSessionID()})
	if err == nil {
		t.Fatal("Start of an app that exits succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Errorf("Start = %v, want an error saying the app exited", err)
	}
	pgid := readPID(t, filepath.Join(dir, "pgid"))
	awaitDead(t, "the app's group", func() bool { return len(liveInGroup(pgid)) > 0 })
	if l, _ := b.List(ctx); len(l) != 0 {
		t.Errorf("List = %+v, want nothing", l)
	}
}

// It follows the app through pids its shell writes down, which a PID
// namespace would renumber, so it runs unisolated: the group kill it
// tests is what ends an app there.
func TestAppNeverReadyTimesOut(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	cmd := "sleep 1000 & echo $! > " + quote(filepath.Join(dir, "child")) + "; echo $$ > " + quote(filepath.Join(dir, "pgid")) + "; " + pyApp("never-ready")
	b := newBackend(t, process.Config{Isolation: "none", Command: cmd, StopGrace: 200 * time.Millisecond})
	runBackend(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := b.Start(ctx, provisioner.Spec{SessionID: messages.NewSessionID()})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want the spawn deadline", err)
	}
	pgid, child := readPID(t, filepath.Join(dir, "pgid")), readPID(t, filepath.Join(dir, "child"))
	awaitDead(t, "the app's group", func() bool { return len(liveInGroup(pgid)) > 0 })
	if alive(child) {
		t.Error("the app's child survived")
	}
	if l, _ := b.List(context.Background()); len(l) != 0 {
		t.Errorf("List = %+v, want nothing", l)
	}
}

// It follows the app through pids its shell writes down, which a PID
// namespace would renumber, so it runs unisolated: the group kill it
// tests is what ends an app there.
func TestStopKillsTheWholeGroup(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	childFile := filepath.Join(dir, "child")
	// The grandchild ignores SIGTERM, so only the group kill ends it.
	cmd := "(trap '' TERM; exec sleep 1000) & echo $! > " + quote(childFile) + "; " + pyApp("ready")
	b := newBackend(t, process.Config{Isolation: "none", Command: cmd, StopGrace: 300 * time.Millisecond})
	runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id})
	pgid, child := pidOf(t, inst), readPID(t, childFile)
	if !alive(child) {
		t.Fatal("the grandchild is not running")
	}
	if err := b.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	awaitDead(t, "the grandchild", func() bool { return alive(child) })
	awaitDead(t, "the app's group", func() bool { return len(liveInGroup(pgid)) > 0 })
	if err := b.Stop(context.Background(), id); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := b.Stop(context.Background(), messages.NewSessionID()); err != nil {
		t.Errorf("Stop of an unknown session: %v", err)
	}
}

func TestAppExitReported(t *testing.T) {
	needPython(t)
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	exits := runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id})
	var bye map[string]any
	getJSON(t, "http://"+inst.Upstream+"/quit", &bye)
	select {
	case e := <-exits:
		if e.SessionID != id || e.Reason != messages.ReasonExited || !strings.Contains(e.Detail, "exit status 7") {
			t.Errorf("exit = %+v, want %s exited with status 7", e, id)
		}
	case <-time.After(patience):
		t.Fatal("no exit reported")
	}
	if l, _ := b.List(context.Background()); len(l) != 0 {
		t.Errorf("List after the exit = %+v", l)
	}
}

// TestEveryEndIsReported: a stopped app's end is reported as an app's
// own is; the provisioner tells them apart by the session's record.
func TestEveryEndIsReported(t *testing.T) {
	needPython(t)
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	exits := runBackend(t, b)
	stopped := messages.NewSessionID()
	start(t, b, provisioner.Spec{SessionID: stopped})
	if err := b.Stop(context.Background(), stopped); err != nil {
		t.Fatal(err)
	}
	other := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: other})
	var bye map[string]any
	getJSON(t, "http://"+inst.Upstream+"/quit", &bye)
	for _, want := range []string{stopped, other} {
		select {
		case e := <-exits:
			if e.SessionID != want || e.Reason != messages.ReasonExited || e.Detail == "" {
				t.Errorf("exit %+v, want one of %s", e, want)
			}
		case <-time.After(patience):
			t.Fatalf("the end of %s was not reported", want)
		}
	}
}

func TestListReflectsInstances(t *testing.T) {
	needPython(t)
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	runBackend(t, b)
	a, c := messages.NewSessionID(), messages.NewSessionID()
	ia := start(t, b, provisioner.Spec{SessionID: a})
	ic := start(t, b, provisioner.Spec{SessionID: c})
	if ia.Upstream == ic.Upstream {
		t.Errorf("two sessions share upstream %s", ia.Upstream)
	}
	list, err := b.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]provisioner.Instance{}
	for _, inst := range list {
		got[inst.SessionID] = inst
	}
	if len(got) != 2 || got[a] != ia || got[c] != ic {
		t.Errorf("List = %+v, want %+v and %+v", list, ia, ic)
	}
	if err := b.Stop(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	list, _ = b.List(context.Background())
	if len(list) != 1 || list[0].SessionID != c {
		t.Errorf("List after a stop = %+v, want only %s", list, c)
	}
}

func TestAppEnvironment(t *testing.T) {
	needPython(t)
	t.Setenv("SPAWNER_API_TOKENS", "secret")
	t.Setenv("NATS_PASSWORD", "hunter2")
	t.Setenv("PORT", "1")
	t.Setenv("KEEP_ME", "kept")
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id, URL: "https://gw.example/p/" + id + "/",
		Env: map[string]string{"GREETING": "hello world", "QUOTED": `a'b"c $HOME`}})
	var env map[string]string
	getJSON(t, "http://"+inst.Upstream+"/env", &env)
	_, port, _ := net.SplitHostPort(inst.Upstream)
	for k, want := range map[string]string{
		"PORT": port, "HOST": "127.0.0.1", "SPAWNER_SESSION_ID": id, "SPAWNER_SESSION_URL": "https://gw.example/p/" + id + "/",
		"GREETING": "hello world", "QUOTED": `a'b"c $HOME`, "KEEP_ME": "kept",
	} {
		if env[k] != want {
			t.Errorf("app sees %s=%q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"SPAWNER_API_TOKENS", "NATS_PASSWORD"} {
		if v, ok := env[k]; ok {
			t.Errorf("the app sees Spawner's %s=%q", k, v)
		}
	}
	for k, v := range env {
		if strings.Contains(v, "secret") || strings.Contains(v, "hunter2") {
			t.Errorf("the app sees a secret in %s", k)
		}
	}
}

func TestRunEndKillsEverything(t *testing.T) {
	needPython(t)
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	exits := make(chan provisioner.Exit, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, exits) }()
	var pgids []int
	for range 2 {
		inst := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
		pgids = append(pgids, pidOf(t, inst))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, pgid := range pgids {
		awaitDead(t, "an app after Run ended", func() bool { return len(liveInGroup(pgid)) > 0 })
	}
	select {
	case e := <-exits:
		t.Errorf("an exit was reported during shutdown: %+v", e)
	default:
	}
}

func TestSidecarStatusSource(t *testing.T) {
	needPython(t)
	var mu sync.Mutex
	var watched []int
	stops := 0
	watcher := func(host string, appPort int) (string, func(), error) {
		mu.Lock()
		defer mu.Unlock()
		watched = append(watched, appPort)
		return "http://" + host + ":1/status-of-" + strconv.Itoa(appPort), func() {
			mu.Lock()
			stops++
			mu.Unlock()
		}, nil
	}
	log := testLogger(t)
	// An app with no /status at all: readiness is the port accepting.
	b, err := process.New(settings.Overlay(process.Config{Command: `exec python3 -m http.server "$PORT" --bind "$HOST"`, StatusSource: "sidecar"}), "", watcher, log)
	if err != nil {
		t.Fatal(err)
	}
	runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id})
	_, port, _ := net.SplitHostPort(inst.Upstream)
	if inst.StatusURL != "http://127.0.0.1:1/status-of-"+port {
		t.Errorf("status URL = %q, want the watcher's", inst.StatusURL)
	}
	if err := b.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	awaitDead(t, "the status watcher", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stops == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(watched) != 1 || strconv.Itoa(watched[0]) != port {
		t.Errorf("watcher called for ports %v, want [%s]", watched, port)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for name, c := range map[string]struct {
		cfg     process.Config
		def     string
		watcher process.StatusWatcher
	}{
		"no command":              {process.Config{}, "  ", nil},
		"unknown status source":   {process.Config{StatusSource: "magic"}, "true", nil},
		"sidecar without watcher": {process.Config{StatusSource: "sidecar"}, "true", nil},
	} {
		if _, err := process.New(settings.Overlay(c.cfg), c.def, c.watcher, log); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

var _ = syscall.SIGKILL
