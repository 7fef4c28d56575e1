package integration

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// worldDir is a directory any uid may write: isolated apps report there.
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spawner-untrusted-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// An untrusted app, on the process backend of the all-in-one with API and
// session tokens on, goes from inside its session for Spawner's
// environment and session secret, for the NATS credentials and the NATS
// port, and leaves a setsid daemon behind; it gets nothing, and the daemon
// ends with its session.
func TestFaultUntrustedApp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("isolating apps needs root")
	}
	out := worldDir(t)
	cfg := testConfig(t)
	cfg.Common.SessionAuth = "token"
	const apiToken = "untrusted-test-api-token-0123456789"
	cfg.Gateway.APITokens = []string{apiToken}
	secretPath := filepath.Join(cfg.Common.DataDir, "session-secret")
	natsPort := strconv.Itoa(freeLoopbackPort(t))
	cfg.Bus.Listen = "127.0.0.1:" + natsPort
	// A unique argument finds the daemon among this machine's processes.
	daemon := "sleep " + strconv.Itoa(1_000_000+os.Getpid())
	at := func(name string) string { return shq(filepath.Join(out, name)) }
	// Speak NATS to the port with no credentials, as any local process can.
	natsProbe := debianPython + ` -c 'import socket; s = socket.create_connection(("127.0.0.1", ` + natsPort + `), 5); s.settimeout(5); s.recv(4096); s.sendall(b"CONNECT {\"verbose\":false}\r\nPING\r\nSUB > 1\r\n"); print(s.recv(4096).decode())'`
	probe := "setsid " + daemon + " & " + strings.Join([]string{
		"cat " + shq(filepath.Join(cfg.Common.DataDir, "nats")) + "/*.nk > " + at("creds") + " 2>" + at("creds.err"),
		natsProbe + " > " + at("nats") + " 2>&1",
		"cat /proc/" + strconv.Itoa(os.Getpid()) + "/environ > " + at("environ") + " 2>" + at("environ.err"),
		"cat " + shq(secretPath) + " > " + at("secret") + " 2>" + at("secret.err"),
		"ls /proc | grep -c '^[0-9]' > " + at("procs"),
		"id -u > " + at("uid"),
		"echo end > " + at("done"),
	}, "; ")
	// The demo app serves the session while the probe runs beside it.
	cfg.Process.Command = shq(spawnerBin) + " demo & " + probe + "; wait"
	h := start(t, cfg)

	resp, body := do(t, http.DefaultClient, "POST", h.BaseURL+"/init", apiToken, "{}")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /init: %d %s", resp.StatusCode, body)
	}
	eventually(t, 20*time.Second, "the app's probe", func() bool {
		_, err := os.Stat(filepath.Join(out, "done"))
		return err == nil
	})
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(out, name))
		return string(data)
	}
	t.Logf("the app saw: uid %s, %s processes; environ: %q; secret: %q",
		strings.TrimSpace(read("uid")), strings.TrimSpace(read("procs")), read("environ.err"), read("secret.err"))
	secret, err := os.ReadFile(secretPath)
	if err != nil || len(secret) == 0 {
		t.Fatalf("Spawner keeps no session secret at %s: %v", secretPath, err)
	}
	if got := read("environ"); got != "" {
		t.Errorf("the app read Spawner's environment: %d bytes", len(got))
	}
	if got := read("secret"); got != "" {
		t.Errorf("the app read the session secret: %q", got)
	}
	if uid := strings.TrimSpace(read("uid")); uid == "0" || uid == "" {
		t.Errorf("the app runs as uid %q", uid)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(read("procs"))); n == 0 || n > 10 {
		t.Errorf("the app sees %d processes, want only its session's few", n)
	}
	if got := read("creds"); got != "" {
		t.Errorf("the app read NATS credentials: %d bytes", len(got))
	}
	if got := read("nats"); !strings.Contains(got, "Authorization Violation") || strings.Contains(got, "PONG") {
		t.Errorf("NATS answered a connection with no credentials: %q", got)
	}
	// The session ends; its daemon must end with it.
	var rep struct {
		SessionID string `json:"session_id"`
	}
	_ = json.Unmarshal([]byte(body), &rep)
	if !daemonRunning(daemon) {
		t.Fatal("the app's setsid daemon never ran, so the test proves nothing")
	}
	if del, _ := do(t, http.DefaultClient, "DELETE", h.BaseURL+"/sessions/"+rep.SessionID, apiToken, ""); del.StatusCode >= 300 {
		t.Fatalf("DELETE the session: %d", del.StatusCode)
	}
	eventually(t, 10*time.Second, "the daemon to end with its session", func() bool { return !daemonRunning(daemon) })
	for path, want := range map[string]os.FileMode{cfg.Common.DataDir: 0o700, secretPath: 0o600} {
		if info, err := os.Stat(path); err != nil || info.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, info.Mode().Perm(), err, want)
		}
	}
}

// Where the process backend cannot isolate apps (not root), Spawner says
// so, and refuses to start beside credentials unless told that is fine.
func TestUnisolatedSpawnerRefusesCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run Spawner as another, unprivileged user")
	}
	// A copy the unprivileged user can reach, and a data dir it owns.
	binDir := worldDir(t)
	bin := filepath.Join(binDir, "spawner")
	data, err := os.ReadFile(spawnerBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, extra ...string) (exited bool, log string) {
		t.Helper()
		dataDir := filepath.Join(worldDir(t), "data")
		cmd := exec.Command(bin)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + binDir, "SPAWNER_DATA_DIR=" + dataDir,
			"SPAWNER_HTTP_ADDR=127.0.0.1:0", "SPAWNER_NATS_LISTEN=127.0.0.1:-1"}, extra...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var all strings.Builder
		up, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				mu.Lock()
				all.WriteString(sc.Text() + "\n")
				mu.Unlock()
				if strings.Contains(sc.Text(), "gateway listening") {
					close(up)
				}
			}
			_ = cmd.Wait()
		}()
		text := func() string { mu.Lock(); defer mu.Unlock(); return all.String() }
		select {
		case <-done:
			return true, text()
		case <-up:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return false, text()
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("spawner neither started nor exited:\n%s", text())
			return false, ""
		}
	}
	for name, c := range map[string]struct {
		env     []string
		refuses bool
	}{
		"api tokens":             {[]string{"SPAWNER_API_TOKENS=secret-token-0123456789"}, true},
		"session tokens":         {[]string{"SPAWNER_SESSION_AUTH=token"}, true},
		"nats credentials":       {[]string{"SPAWNER_NATS_PASSWORD=pw", "SPAWNER_NATS_USER=u"}, true},
		"tokens, isolation none": {[]string{"SPAWNER_API_TOKENS=secret-token-0123456789", "SPAWNER_PROCESS_ISOLATION=none"}, false},
		"no credentials":         {nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			exited, log := run(t, c.env...)
			if c.refuses {
				if !exited || !strings.Contains(log, "cannot isolate apps here") || !strings.Contains(log, "SPAWNER_PROCESS_ISOLATION=none") {
					t.Errorf("spawner did not refuse to start (exited %v):\n%s", exited, log)
				}
				t.Logf("spawner refused:\n%s", log)
				return
			}
			if exited {
				t.Fatalf("spawner exited at start:\n%s", log)
			}
			loud := strings.Contains(log, "APPS ARE NOT ISOLATED")
			if explicit := slicesContain(c.env, "SPAWNER_PROCESS_ISOLATION=none"); loud == explicit {
				t.Errorf("warning shown %v with isolation none set %v:\n%s", loud, explicit, log)
			}
		})
	}
}

// daemonRunning reports whether a process runs with exactly this command
// line.
func daemonRunning(cmdline string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Join(strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), " ") == cmdline {
			return true
		}
	}
	return false
}

func slicesContain(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
