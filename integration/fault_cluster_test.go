package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
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
// SIGKILL and restarted on the same ports and data dir. A process is named
// by its mode ("nats", "gateway", "provisioner", "prober", "reaper", "all"),
// or, for replicas, by its mode and a number ("gateway-2", "nats-1").
type faultCluster struct {
	env     []string
	extra   []string
	logDir  string
	Tag     string
	NATSURL string
	// BaseURL is the first gateway's; GatewayURLs has every gateway's.
	BaseURL     string
	GatewayURLs []string
	// DataDir holds the role credentials the components connect with: the
	// NATS server's, or on a cluster the first server's.
	DataDir string
	// servers are the servers of a NATS cluster (see faultLayout), by name.
	servers map[string]faultServer
	// gateways maps each gateway's name to its listen address.
	gateways map[string]string

	mu    sync.Mutex
	procs map[string]*faultProc
	kills map[string]int
}

// faultLayout is how many NATS servers and gateways a faultCluster has.
// One server is "nats"; more are "nats-1", "nats-2", ..., one cluster with
// streams and bucket replicated on three of them. One gateway is
// "gateway"; more are "gateway-1", "gateway-2", ..., each on its own port.
type faultLayout struct {
	NATSServers int
	Gateways    int
}

// faultServer is one server of a NATS cluster.
type faultServer struct {
	addr, route, dataDir string
}

// faultProc is one running Spawner process.
type faultProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	// logOffset is where this run's lines start in the name's log.
	logOffset int64
}

// newFaultCluster prepares one NATS server and one gateway; see
// newFaultClusterOf.
func newFaultCluster(t *testing.T, extra ...string) *faultCluster {
	t.Helper()
	return newFaultClusterOf(t, faultLayout{NATSServers: 1, Gateways: 1}, extra...)
}

// newFaultClusterOf prepares the shared settings: free ports, data dirs,
// short timeouts, a fixed provisioner name per replica so a restarted
// provisioner adopts its records. extra settings override the defaults.
func newFaultClusterOf(t *testing.T, layout faultLayout, extra ...string) *faultCluster {
	t.Helper()
	c := &faultCluster{
		logDir:   filepath.Join("artifacts", "fault-logs", t.Name()),
		Tag:      faultRandomHex(8),
		DataDir:  t.TempDir(),
		extra:    extra,
		servers:  map[string]faultServer{},
		gateways: map[string]string{},
		procs:    map[string]*faultProc{},
		kills:    map[string]int{},
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
		"SPAWNER_PROVISIONER_NAME=fault-provisioner",
		"SPAWNER_IDLE_TIMEOUT=2s",
		"SPAWNER_PROBE_INTERVAL=500ms",
		"SPAWNER_RECONCILE_INTERVAL=1s",
		"SPAWNER_SPAWN_TIMEOUT=10s",
		"SPAWNER_LOG_LEVEL=info",
	)
	if layout.NATSServers <= 1 {
		addr := "127.0.0.1:" + strconv.Itoa(faultFreePort(t))
		c.NATSURL = "nats://" + addr
		c.env = append(c.env, "SPAWNER_NATS_LISTEN="+addr)
	} else {
		c.prepareNATSCluster(t, layout.NATSServers)
	}
	for i := range max(layout.Gateways, 1) {
		name := "gateway"
		if layout.Gateways > 1 {
			name += "-" + strconv.Itoa(i+1)
		}
		addr := "127.0.0.1:" + strconv.Itoa(faultFreePort(t))
		c.gateways[name] = addr
		c.GatewayURLs = append(c.GatewayURLs, "http://"+addr)
	}
	c.BaseURL = c.GatewayURLs[0]
	// The all-in-one serves on the first gateway's address.
	c.env = append(c.env, "SPAWNER_HTTP_ADDR="+strings.TrimPrefix(c.BaseURL, "http://"), "SPAWNER_PUBLIC_URL="+c.BaseURL)
	t.Cleanup(c.cleanup)
	return c
}

// faultMode is the mode a process name runs: the name without its
// replica number.
func faultMode(name string) string {
	if mode, n, ok := strings.Cut(name, "-"); ok {
		if _, err := strconv.Atoi(n); err == nil {
			return mode
		}
	}
	return name
}

// envOf is the environment of the named process: the shared settings,
// then its own (a cluster server's addresses and data dir, a gateway's
// port, a provisioner replica's name), then the test's.
func (c *faultCluster) envOf(name string) []string {
	env := c.env[:len(c.env):len(c.env)]
	mode := faultMode(name)
	switch {
	case mode == "nats":
		if s, ok := c.servers[name]; ok {
			env = append(env, c.serverEnv(name, s)...)
		}
	case mode != "all":
		env = append(env, "SPAWNER_NATS_URL="+c.NATSURL)
	}
	if addr, ok := c.gateways[name]; ok {
		env = append(env, "SPAWNER_HTTP_ADDR="+addr, "SPAWNER_PUBLIC_URL=http://"+addr)
	}
	if mode == "provisioner" && name != mode {
		env = append(env, "SPAWNER_PROVISIONER_NAME=fault-"+name)
	}
	return append(env, c.extra...)
}

// Start runs a process (see faultCluster for the names) and waits until
// it serves. It is safe to call from any goroutine.
func (c *faultCluster) Start(name string) error {
	var args []string
	if mode := faultMode(name); mode != "all" {
		args = []string{mode}
	}
	if err := c.prepareServer(name); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(c.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	offset, _ := logFile.Seek(0, 2)
	fmt.Fprintf(logFile, "=== %s start\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(spawnerBin, args...)
	cmd.Env = c.envOf(name)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own group, so cleanup reaches whatever it started; Pdeathsig, so
	// an aborted test binary leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	comp := &faultProc{name: name, cmd: cmd, done: make(chan struct{}), logOffset: offset + 1}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(comp.done)
	}()
	c.mu.Lock()
	c.procs[name] = comp
	c.mu.Unlock()
	if err := c.awaitServing(comp); err != nil {
		return fmt.Errorf("%s did not come up: %w (log: %s)", name, err, filepath.Join(c.logDir, name+".log"))
	}
	return nil
}

// awaitServing waits until the process does its job: NATS accepts
// connections, the gateway is ready, a provisioner has subscribed and a
// provisioner answers stop requests, and the prober and reaper have
// logged that they started.
func (c *faultCluster) awaitServing(comp *faultProc) error {
	deadline := time.Now().Add(30 * time.Second)
	mode := faultMode(comp.name)
	for time.Now().Before(deadline) {
		select {
		case <-comp.done:
			return fmt.Errorf("exited: %v", comp.cmd.ProcessState)
		default:
		}
		var ok bool
		switch mode {
		case "nats":
			addr := strings.TrimPrefix(c.NATSURL, "nats://")
			if s, clustered := c.servers[comp.name]; clustered {
				addr = s.addr
			}
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				ok = true
			}
		case "gateway", "all":
			ok = c.ready("http://" + c.gatewayAddr(comp.name))
		case "provisioner":
			// The single provisioner is known to serve by its answer; a
			// replica also by its log, as the other may be the one answering.
			ok = (comp.name == mode || c.logged(comp, mode+" started")) && c.provisionerAnswers()
		default:
			ok = c.logged(comp, mode+" started")
		}
		if ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving within 30s")
}

func (c *faultCluster) gatewayAddr(name string) string {
	if addr, ok := c.gateways[name]; ok {
		return addr
	}
	return strings.TrimPrefix(c.BaseURL, "http://")
}

func (c *faultCluster) ready(base string) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(base + "/readyz")
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

// logged reports whether the process's current run has logged marker.
func (c *faultCluster) logged(comp *faultProc, marker string) bool {
	return bytes.Contains(c.logOf(comp), []byte(marker))
}

// logOf returns what the process's current run has logged.
func (c *faultCluster) logOf(comp *faultProc) []byte {
	data, err := os.ReadFile(filepath.Join(c.logDir, comp.name+".log"))
	if err != nil || int64(len(data)) < comp.logOffset {
		return nil
	}
	return data[comp.logOffset:]
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

// faultFreePort returns a port nothing listens on, from below Linux's
// ephemeral range (32768 up): a port the kernel handed out for ":0" is
// free again once closed, and an outgoing connection of any process may
// take it as its own port before the server that was to listen there
// starts. That happened to a NATS route port while the suite ran, and the
// server could not open its route listener. The ports start above the
// process backend's range for apps (SPAWNER_APP_PORT_RANGE, 20000-29999),
// which the suite's own provisioners draw from.
func faultFreePort(t *testing.T) int {
	t.Helper()
	for range 1000 {
		port := 30000 + mathrand.IntN(2700)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port between 30000 and 32700")
	return 0
}

func faultRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
