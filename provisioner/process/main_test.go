package process_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/internal/testlog"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

// spawnerBin is the spawner binary, built once, whose demo mode is the app
// the backend runs by default.
var spawnerBin string

// appScript is a small app with knobs: it serves /status (listening unless
// started with never-ready), /env, and /quit, which exits with status 7.
const appScript = `
import http.server, json, os, sys, threading
mode = sys.argv[1] if len(sys.argv) > 1 else "ready"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/status":
            body = {"active_connections": 0, "seconds_inactive": 0, "listening": mode != "never-ready"}
        elif self.path == "/env":
            body = dict(os.environ)
        elif self.path == "/quit":
            threading.Timer(0.05, lambda: os._exit(7)).start()
            body = {"bye": True}
        else:
            body = {"path": self.path}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
`

var appPath string

// secretEnv is in this test process's environment from its start, so it
// shows in /proc/<pid>/environ, as Spawner's own settings do.
const secretEnv = "SPAWNER_PROCESS_TEST_SECRET"

func TestMain(m *testing.M) {
	if os.Getenv(secretEnv) == "" {
		// Start again with the secret in the initial environment: a later
		// Setenv never reaches /proc/<pid>/environ.
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, os.Args, append(os.Environ(), secretEnv+"=s3cret-"+strconv.Itoa(os.Getpid())))
		}
		fmt.Fprintln(os.Stderr, "re-exec with a secret:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "process-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Isolated apps run as other uids, which must reach the test app.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spawnerBin = filepath.Join(dir, "spawner")
	build := exec.Command("go", "build", "-o", spawnerBin, "github.com/spawnerhq/spawner/cmd/spawner")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build spawner:", err)
		os.Exit(1)
	}
	appPath = filepath.Join(dir, "app.py")
	if err := os.WriteFile(appPath, []byte(appScript), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func pyApp(mode string) string { return "exec python3 " + quote(appPath) + " " + mode }

func newBackend(t *testing.T, cfg process.Config) *process.Backend {
	t.Helper()
	log := testLogger(t)
	b, err := process.New(settings.Overlay(cfg), quote(spawnerBin)+" demo", nil, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runBackend runs b until the test ends and returns the exits it reports.
func runBackend(t *testing.T, b *process.Backend) <-chan provisioner.Exit {
	t.Helper()
	exits := make(chan provisioner.Exit, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, exits) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Run records the channel before it blocks; give it the moment it needs
	// by listing, which takes the same lock.
	_, _ = b.List(ctx)
	return exits
}

func start(t *testing.T, b *process.Backend, spec provisioner.Spec) provisioner.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	inst, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background(), spec.SessionID) })
	return inst
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func pidOf(t *testing.T, inst provisioner.Instance) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimPrefix(inst.Handle, "pid:"))
	if err != nil || pid <= 1 {
		t.Fatalf("handle %q holds no pid", inst.Handle)
	}
	return pid
}

// appPidOf is the pid of the session's app, or of its shell: the
// handle's pid, or, where the handle is an isolation helper, the helper's
// one child.
func appPidOf(t *testing.T, inst provisioner.Instance) int {
	t.Helper()
	pid := pidOf(t, inst)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.HasPrefix(string(cmdline), apphelper.Name+"\x00") {
		return pid
	}
	kids := childrenOf(pid)
	if len(kids) != 1 {
		t.Fatalf("isolation helper %d has children %v, want the app alone", pid, kids)
	}
	return kids[0]
}

// pidsWhere lists the processes for which keep says true.
func pidsWhere(keep func(pid int) bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && keep(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	return pidsWhere(func(child int) bool {
		_, ppid, _, ok := procStat(child)
		return ok && ppid == pid
	})
}

// liveInGroup lists the processes of group pgid that still run; zombies
// do not count, because whoever adopted them may never reap them.
func liveInGroup(pgid int) []int {
	return pidsWhere(func(pid int) bool {
		state, _, pgrp, ok := procStat(pid)
		return ok && pgrp == pgid && running(state)
	})
}

func alive(pid int) bool {
	state, _, _, ok := procStat(pid)
	return ok && running(state)
}

// threadsAlive reports whether any thread of process pid still runs: its
// first thread may be a zombie while the others are still ending.
func threadsAlive(pid int) bool {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		if state, _, _, ok := statFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name())); ok && running(state) {
			return true
		}
	}
	return false
}

// running says a process in state is not a zombie, dead or not yet reaped.
func running(state string) bool { return state != "Z" && state != "X" }

func procStat(pid int) (state string, ppid, pgrp int, ok bool) {
	return statFile(fmt.Sprintf("/proc/%d/stat", pid))
}

// statFile reads a process's or a thread's stat file.
func statFile(path string) (state string, ppid, pgrp int, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, 0, false
	}
	// The command name may hold spaces and parentheses; the fields after
	// the last ')' are fixed: state, ppid, pgrp.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 3 {
		return "", 0, 0, false
	}
	ppid, err1 := strconv.Atoi(fields[1])
	pgrp, err2 := strconv.Atoi(fields[2])
	return fields[0], ppid, pgrp, err1 == nil && err2 == nil
}

// awaitDead waits until check reports nothing alive.
func awaitDead(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still running", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			line, _, _ := strings.Cut(string(data), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t) }

// needRoot skips tests of isolation, which needs root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("isolation needs root")
	}
}

// sharedDir is a directory every uid may write, for isolated apps to
// leave what they saw.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "process-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// uidOf is the real uid process pid runs as.
func uidOf(t *testing.T, pid int) uint32 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				uid, err := strconv.ParseUint(f[0], 10, 32)
				if err == nil {
					return uint32(uid)
				}
			}
		}
	}
	t.Fatalf("no uid for pid %d", pid)
	return 0
}

// liveOfUID lists the live processes whose files /proc says uid owns.
func liveOfUID(uid uint32) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// readFile waits for path to hold a line ending in "end".
func readFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		data, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(data), "\nend") {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never finished: %q", path, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
