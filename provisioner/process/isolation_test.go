package process_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/sessiontoken"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
)

func TestIsolatedAppsRunAsTheirOwnUID(t *testing.T) {
	needRoot(t)
	b := newBackend(t, process.Config{UIDRange: "2000100000-2000100009"})
	runBackend(t, b)
	if b.Isolation() != process.IsolationNamespaces {
		t.Fatalf("Isolation() = %q as root, want namespaces", b.Isolation())
	}
	seen := map[uint32]bool{}
	for range 2 {
		inst := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
		app := appPidOf(t, inst)
		uid := uidOf(t, app)
		if uid < 2000100000 || uid > 2000100009 || seen[uid] {
			t.Errorf("app runs as uid %d, want a uid of its own from the range (others: %v)", uid, seen)
		}
		seen[uid] = true
		status, _ := os.ReadFile("/proc/" + strconv.Itoa(app) + "/status")
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "Groups:"); ok && strings.TrimSpace(rest) != "" {
				t.Errorf("app keeps supplementary groups %q", rest)
			}
			if rest, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok && strings.TrimSpace(rest) != "1" {
				t.Error("a setuid program could raise the app's privileges")
			}
		}
	}
}

// An app that goes looking for Spawner's secrets and its neighbours, as
// an attacker would, finds nothing.
func TestIsolatedAppCannotReachSpawnerOrOtherSessions(t *testing.T) {
	needRoot(t)
	needPython(t)
	for _, level := range []string{process.IsolationNamespaces, process.IsolationUID} {
		t.Run(level, func(t *testing.T) {
			// Spawner's data dir with its session secret, as the binary keeps them.
			dataDir := filepath.Join(t.TempDir(), "data")
			secret, err := sessiontoken.LoadSecret("", dataDir)
			if err != nil {
				t.Fatal(err)
			}
			b := newBackend(t, process.Config{Isolation: level, Command: pyApp("ready")})
			runBackend(t, b)
			neighbour := appPidOf(t, start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()}))

			out := filepath.Join(sharedDir(t), "seen")
			probe := strings.Join([]string{
				"exec > " + quote(out) + " 2>&1",
				"echo environ:; cat /proc/" + strconv.Itoa(os.Getpid()) + "/environ /proc/1/environ",
				"echo; echo procs:; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '",
				"echo; echo data:; ls " + quote(dataDir) + "; cat " + quote(filepath.Join(dataDir, "session-secret")),
				"echo; echo signal:; kill -0 " + strconv.Itoa(neighbour) + " && echo SIGNALLED",
				"echo; echo end",
			}, "\n")
			cmd := "(" + probe + ")\n" + pyApp("ready")
			b2 := newBackend(t, process.Config{Isolation: level, Command: cmd})
			runBackend(t, b2)
			start(t, b2, provisioner.Spec{SessionID: messages.NewSessionID()})
			seen := readFile(t, out)
			t.Logf("the app saw:\n%s", seen)
			if strings.Contains(seen, os.Getenv(secretEnv)) {
				t.Error("the app read Spawner's environment")
			}
			if strings.Contains(seen, hex.EncodeToString(secret)) || !strings.Contains(seen, "Permission denied") {
				t.Error("the app read Spawner's data dir")
			}
			if strings.Contains(seen, "SIGNALLED") {
				t.Error("the app may signal another session's app")
			}
			if level == process.IsolationNamespaces {
				procs := strings.Fields(between(seen, "procs:", "data:"))
				for _, p := range procs {
					if p == strconv.Itoa(os.Getpid()) || p == strconv.Itoa(neighbour) {
						t.Errorf("the app sees process %s of Spawner or of another session", p)
					}
				}
				if len(procs) == 0 || len(procs) > 8 {
					t.Errorf("the app sees processes %v, want only its own few", procs)
				}
			}
		})
	}
}

func between(s, from, to string) string {
	_, rest, _ := strings.Cut(s, from)
	rest, _, _ = strings.Cut(rest, to)
	return rest
}

// A daemon that leaves the app's process group still ends with its
// session, whether the session is stopped or its app exits on its own.
func TestSetsidDaemonDiesWithItsSession(t *testing.T) {
	needRoot(t)
	needPython(t)
	for _, level := range []string{process.IsolationNamespaces, process.IsolationUID} {
		for _, end := range []string{"stop", "exit"} {
			t.Run(level+"/"+end, func(t *testing.T) {
				b := newBackend(t, process.Config{Isolation: level, StopGrace: 300 * time.Millisecond,
					Command: "setsid sleep 1000 & " + pyApp("ready")})
				exits := runBackend(t, b)
				id := messages.NewSessionID()
				inst := start(t, b, provisioner.Spec{SessionID: id})
				uid := uidOf(t, appPidOf(t, inst))
				awaitDead(t, "waiting for the daemon", func() bool { return len(liveOfUID(uid)) < 2 })
				if end == "stop" {
					if err := b.Stop(context.Background(), id); err != nil {
						t.Fatal(err)
					}
				} else {
					var bye map[string]any
					getJSON(t, "http://"+inst.Upstream+"/quit", &bye)
					select {
					case <-exits:
					case <-time.After(patience):
						t.Fatal("no exit reported")
					}
				}
				awaitDead(t, "the setsid daemon", func() bool { return len(liveOfUID(uid)) > 0 })
			})
		}
	}
}

func TestWorkdirIsPrivateAndRemoved(t *testing.T) {
	needRoot(t)
	shared := sharedDir(t)
	out := filepath.Join(shared, "seen")
	b := newBackend(t, process.Config{Command: "echo \"$PWD $HOME\" > " + quote(out) + "; echo end >> " + quote(out) + "; exec " + quote(spawnerBin) + " demo"})
	runBackend(t, b)
	id := messages.NewSessionID()
	inst := start(t, b, provisioner.Spec{SessionID: id})
	dirs := strings.Fields(readFile(t, out))
	if len(dirs) < 2 || dirs[0] != dirs[1] {
		t.Fatalf("the app saw PWD and HOME %q, want the same directory", dirs)
	}
	dir := dirs[0]
	if !strings.Contains(dir, id) || dir == os.TempDir() {
		t.Errorf("workdir %s is not the session's own", dir)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 || !info.IsDir() {
		t.Errorf("workdir mode %v, want a 0700 directory", info.Mode())
	}
	if st := statUID(t, dir); st != uidOf(t, appPidOf(t, inst)) {
		t.Errorf("workdir owned by uid %d, not the app's", st)
	}
	if err := b.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workdir %s is still there after Stop (%v)", dir, err)
	}

	// A fixed workdir is used as it is, and kept.
	fixed := sharedDir(t)
	out = filepath.Join(shared, "seen-fixed")
	b2 := newBackend(t, process.Config{Workdir: fixed, Command: "pwd > " + quote(out) + "; echo end >> " + quote(out) + "; exec " + quote(spawnerBin) + " demo"})
	runBackend(t, b2)
	id2 := messages.NewSessionID()
	start(t, b2, provisioner.Spec{SessionID: id2})
	if got := strings.Fields(readFile(t, out)); len(got) == 0 || got[0] != fixed {
		t.Errorf("app ran in %v, want the fixed %s", got, fixed)
	}
	if err := b2.Stop(context.Background(), id2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fixed); err != nil {
		t.Errorf("the fixed workdir was removed: %v", err)
	}
}

func statUID(t *testing.T, path string) uint32 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Uid
}

// A spawn that fails says how the app ended and what it wrote last,
// bounded, and does not name the session: the provisioner does that.
func TestFailedStartExplainsItself(t *testing.T) {
	b := newBackend(t, process.Config{Command: "i=0; while [ $i -lt 300 ]; do echo \"noise line $i of a long start\"; i=$((i+1)); done; " +
		"echo 'config file missing' >&2; exit 3"})
	runBackend(t, b)
	id := messages.NewSessionID()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := b.Start(ctx, provisioner.Spec{SessionID: id})
	if err == nil {
		t.Fatal("Start of an app that exits succeeded")
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	for _, want := range []string{"exited", "exit status 3", "config file missing", "noise line 299"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if strings.Contains(msg, id) {
		t.Error("the backend's error names the session, which the provisioner adds")
	}
	if strings.Contains(msg, "noise line 0 ") || len(msg) > 2600 {
		t.Errorf("error holds %d bytes, want only the last ~2 KiB of output", len(msg))
	}
}

// With nobody reading exits after shutdown, apps that end on their own
// leave no goroutine behind.
func TestShutdownWithSelfExitsLeavesNoGoroutine(t *testing.T) {
	needPython(t)
	b := newBackend(t, process.Config{Command: pyApp("ready")})
	exits := make(chan provisioner.Exit) // Never read.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, exits) }()
	_, _ = b.List(ctx)
	for range 3 {
		inst := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
		var bye map[string]any
		getJSON(t, "http://"+inst.Upstream+"/quit", &bye)
	}
	// Let the exits reach the send that nobody takes.
	awaitDead(t, "apps", func() bool { l, _ := b.List(ctx); return len(l) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	awaitDead(t, "a goroutine sending an exit", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "process.(*Backend).wait")
	})
}

// The app's program may live where its uid cannot look, as a test or
// build binary in a 0700 directory does; it runs all the same.
func TestAppBinaryInPrivateDirRuns(t *testing.T) {
	needRoot(t)
	needPython(t)
	dir := t.TempDir() // 0700, root's.
	out := filepath.Join(sharedDir(t), "seen")
	bin := filepath.Join(dir, "app.sh")
	app := "#!/bin/sh\nid -u > " + quote(out) + "; ls -a " + quote(dir) + " >> " + quote(out) + " 2>&1; echo end >> " + quote(out) + "\n" + pyApp("ready") + "\n"
	if err := os.WriteFile(bin, []byte(app), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "private"), []byte("root's own"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, process.Config{Command: quote(bin) + " --flag"})
	runBackend(t, b)
	start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
	seen := readFile(t, out)
	if strings.HasPrefix(seen, "0\n") {
		t.Fatal("the app runs as root")
	}
	// The directory shows the binary and nothing else of what it holds.
	if strings.Contains(seen, "private") || !strings.Contains(seen, "app.sh") {
		t.Errorf("the app sees its binary's directory as %q, want app.sh only", seen)
	}
}

func TestIsolationSettings(t *testing.T) {
	log := testLogger(t)
	for name, cfg := range map[string]process.Config{
		"unknown level":     {Isolation: "chroot"},
		"reversed range":    {UIDRange: "2000-1000"},
		"range with uid 0":  {UIDRange: "0-100"},
		"not a range":       {UIDRange: "lots"},
		"missing fixed dir": {Workdir: "/nonexistent/spawner-workdir"},
	} {
		if _, err := process.New(settings.Overlay(cfg), "true", nil, log); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b, err := process.New(settings.Overlay(process.Config{Isolation: "none"}), "true", nil, log)
	if err != nil || b.Isolation() != process.IsolationNone {
		t.Errorf("none: %v, isolation %q", err, b.Isolation())
	}
}

// An app the helper starts without the shell sees one value per variable,
// the one the shell would give it: its own HOME and PWD over Spawner's,
// and the spec's settings over Spawner's environment.
func TestDirectStartSeesTheShellsEnvironment(t *testing.T) {
	needRoot(t)
	t.Setenv("X_SPAWNER_DUP", "spawner")
	b := newBackend(t, process.Config{Command: "exec printenv HOME X_SPAWNER_DUP PWD"})
	runBackend(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := b.Start(ctx, provisioner.Spec{SessionID: messages.NewSessionID(), Env: map[string]string{"X_SPAWNER_DUP": "spec"}})
	if err == nil {
		t.Fatal("Start of an app that exits succeeded")
	}
	_, out, _ := strings.Cut(err.Error(), "its last output:\n")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "spawner-app-") || lines[1] != "spec" || lines[2] != lines[0] {
		t.Fatalf("the app saw HOME, X_SPAWNER_DUP and PWD as %q, want its working directory, the spec's value and the directory again (%v)", lines, err)
	}
}
