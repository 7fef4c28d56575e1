package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
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

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// faultTagVar is set in every Spawner process a fault test starts. The
// process backend hands its environment on to apps (minus SPAWNER_ and
// NATS_ settings), so the apps of one test run can be told apart from
// every other Spawner app on the machine.
const faultTagVar = "FAULT_RUN_TAG"

// faultCluster is Spawner as separate OS processes of the real binary, one per
// component, each in its own process group so it can be killed with
// SIGKILL and restarted on the same ports and data dir.
type faultCluster struct {
	env     []string
	logDir  string
	Tag     string
	NATSURL string
	BaseURL string
	DataDir string

	mu    sync.Mutex
	procs map[string]*faultProc
	kills map[string]int
}

// faultProc is one running Spawner process.
type faultProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// newFaultCluster prepares the shared settings: free ports, a data dir, short
// timeouts, a fixed provisioner name so a restarted provisioner adopts its
// records. extra settings override the defaults.
func newFaultCluster(t *testing.T, extra ...string) *faultCluster {
	t.Helper()
	natsAddr := "127.0.0.1:" + strconv.Itoa(faultFreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(faultFreePort(t))
	c := &faultCluster{
		logDir:  filepath.Join("artifacts", "fault-logs", t.Name()),
		Tag:     faultRandomHex(8),
		NATSURL: "nats://" + natsAddr,
		BaseURL: "http://" + httpAddr,
		DataDir: t.TempDir(),
		procs:   map[string]*faultProc{},
		kills:   map[string]int{},
	}
	if err := os.RemoveAll(c.logDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		// The developer's own settings must not leak into the run.
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") || strings.HasPrefix(name, "NATS_") {
			continue
		}
		c.env = append(c.env, kv)
	}
	c.env = append(c.env,
		faultTagVar+"="+c.Tag,
		"SPAWNER_DATA_DIR="+c.DataDir,
		"SPAWNER_NATS_LISTEN="+natsAddr,
		"SPAWNER_HTTP_ADDR="+httpAddr,
		"SPAWNER_PUBLIC_URL="+c.BaseURL,
		"SPAWNER_PROVISIONER_NAME=fault-provisioner",
		"SPAWNER_IDLE_TIMEOUT=2s",
		"SPAWNER_PROBE_INTERVAL=500ms",
		"SPAWNER_RECONCILE_INTERVAL=1s",
		"SPAWNER_SPAWN_TIMEOUT=10s",
		"SPAWNER_LOG_LEVEL=info",
	)
	c.env = append(c.env, extra...)
	t.Cleanup(c.cleanup)
	return c
}

// Start runs a component: "nats", "gateway", "provisioner", "prober",
// "reaper", or "all" (the binary with no arguments), and waits until it
// serves. It is safe to call from any goroutine.
func (c *faultCluster) Start(name string) error {
	var args []string
	env := c.env
	if name != "all" {
		args = []string{name}
		if name != "nats" {
			env = append(env[:len(env):len(env)], "SPAWNER_NATS_URL="+c.NATSURL)
		}
	}
	logFile, err := os.OpenFile(filepath.Join(c.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	offset, _ := logFile.Seek(0, 2)
	fmt.Fprintf(logFile, "=== %s start\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(spawnerBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own group, so cleanup reaches whatever it started; Pdeathsig, so
	// an aborted test binary leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	comp := &faultProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(comp.done)
	}()
	c.mu.Lock()
	c.procs[name] = comp
	c.mu.Unlock()
	if err := c.awaitServing(comp, offset+1); err != nil {
		return fmt.Errorf("%s did not come up: %w (log: %s)", name, err, filepath.Join(c.logDir, name+".log"))
	}
	return nil
}

// awaitServing waits until the component does its job: NATS accepts
// connections, the gateway is ready, a provisioner answers stop requests,
// and the prober and reaper have logged that they started.
func (c *faultCluster) awaitServing(comp *faultProc, logOffset int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-comp.done:
			return fmt.Errorf("exited: %v", comp.cmd.ProcessState)
		default:
		}
		var ok bool
		switch comp.name {
		case "nats":
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.NATSURL, "nats://"), time.Second)
			if err == nil {
				conn.Close()
				ok = true
			}
		case "gateway", "all":
			ok = c.ready()
		case "provisioner":
			ok = c.provisionerAnswers()
		default:
			ok = c.logged(comp.name, logOffset, comp.name+" started")
		}
		if ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving within 30s")
}

func (c *faultCluster) ready() bool {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(c.BaseURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// provisionerAnswers asks for a stop of a session nobody has; only a
// running provisioner answers, and with found false.
func (c *faultCluster) provisionerAnswers() bool {
	// The reaper's role may send stops; "spawner nats" requires one.
	nc, err := nats.Connect(c.NATSURL, append(c.NATSOptions(bus.RoleReaper), nats.Timeout(time.Second))...)
	if err != nil {
		return false
	}
	defer nc.Close()
	data, _ := json.Marshal(messages.StopRequest{SessionID: messages.NewSessionID(), Reason: messages.ReasonDeleted})
	msg, err := nc.Request("spawner.control.stop", data, 2*time.Second)
	if err != nil {
		return false
	}
	var rep messages.StopReply
	return json.Unmarshal(msg.Data, &rep) == nil && rep.Error == nil && !rep.Found
}

// NATSOptions authenticate as role with the credentials the NATS server
// generated into the shared data dir, and use the role's private inbox.
func (c *faultCluster) NATSOptions(role string) []nats.Option {
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	opts := []nats.Option{nats.CustomInboxPrefix(bus.InboxPrefix(subj, role))}
	if nk, err := nats.NkeyOptionFromSeed(bus.CredentialsFile(c.DataDir, role)); err == nil {
		opts = append(opts, nk)
	}
	return opts
}

func (c *faultCluster) logged(name string, offset int64, marker string) bool {
	data, err := os.ReadFile(filepath.Join(c.logDir, name+".log"))
	if err != nil || int64(len(data)) < offset {
		return false
	}
	return bytes.Contains(data[offset:], []byte(marker))
}

// Kill sends SIGKILL to the component's process alone, as a crash or the
// OOM killer would, and waits until it is gone.
func (c *faultCluster) Kill(name string) error {
	c.mu.Lock()
	comp := c.procs[name]
	c.kills[name]++
	c.mu.Unlock()
	if comp == nil {
		return fmt.Errorf("kill %s: not running", name)
	}
	_ = comp.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-comp.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s survived SIGKILL for 10s", name)
	}
}

// Kills returns how often each component was killed.
func (c *faultCluster) Kills() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.kills))
	for k, v := range c.kills {
		out[k] = v
	}
	return out
}

// Stop ends a component with SIGTERM, as an orchestrator does, and
// reports whether it exited cleanly within the timeout.
func (c *faultCluster) Stop(name string, timeout time.Duration) error {
	c.mu.Lock()
	comp := c.procs[name]
	c.mu.Unlock()
	if comp == nil {
		return nil
	}
	_ = comp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-comp.done:
		if !comp.cmd.ProcessState.Success() {
			return fmt.Errorf("%s exited with %v", name, comp.cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		_ = syscall.Kill(-comp.cmd.Process.Pid, syscall.SIGKILL)
		<-comp.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", name, timeout)
	}
}

// cleanup kills every process group still running and, as a last resort,
// any app of this run, so that a failed test leaves nothing behind. The
// assertions about leaks run before this.
func (c *faultCluster) cleanup() {
	c.mu.Lock()
	procs := make([]*faultProc, 0, len(c.procs))
	for _, comp := range c.procs {
		procs = append(procs, comp)
	}
	c.mu.Unlock()
	for _, comp := range procs {
		_ = syscall.Kill(-comp.cmd.Process.Pid, syscall.SIGKILL)
		<-comp.done
	}
	for pid := range faultApps(c.Tag) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// faultApps maps the pid of every app process started under tag to its
// session id, read from the environment the process backend gave it.
func faultApps(tag string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or a zombie whose environment is released
		}
		var id string
		tagged := false
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "SPAWNER_SESSION_ID="); ok {
				id = v
			}
			if kv == faultTagVar+"="+tag {
				tagged = true
			}
		}
		if tagged && id != "" {
			out[pid] = id
		}
	}
	return out
}

func faultFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func faultRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
