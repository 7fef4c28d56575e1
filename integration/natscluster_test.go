package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// clusterProc is one process of the binary in its own process group.
type clusterProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, logDir, name string, env []string, args ...string) *clusterProc {
	t.Helper()
	logFile, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(spawnerBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &clusterProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL to the process group, as a crash would, and waits.
func (p *clusterProc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func awaitTCP(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("nothing listens on %s after 30s", addr)
}

// TestNATSClusterProcesses runs three "spawner nats" processes as one
// cluster with R3 streams, and the components (two probers) on it; it
// kills -9 the server that leads the session bucket and the prober, and
// checks that spawning, proxying, stopping and reaping go on with nothing
// leaked.
func TestNATSClusterProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-server NATS cluster and every component as processes")
	}
	tag := faultRandomHex(8)
	logDir := filepath.Join("artifacts", "fault-logs", t.Name())
	_ = os.RemoveAll(logDir)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var base []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") || strings.HasPrefix(name, "NATS_") {
			continue
		}
		base = append(base, kv)
	}
	base = append(base, faultTagVar+"="+tag, "SPAWNER_NATS_REPLICAS=3", "SPAWNER_LOG_LEVEL=info",
		"SPAWNER_IDLE_TIMEOUT=20s", "SPAWNER_PROBE_INTERVAL=500ms", "SPAWNER_RECONCILE_INTERVAL=1s",
		"SPAWNER_SPAWN_TIMEOUT=10s")
	var clientAddrs, routes []string
	dirs := make([]string, 3)
	for i := range 3 {
		clientAddrs = append(clientAddrs, "127.0.0.1:"+strconv.Itoa(faultFreePort(t)))
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(faultFreePort(t)))
		dirs[i] = t.TempDir()
	}
	natsEnv := func(i int) []string {
		return append(base[:len(base):len(base)], "SPAWNER_DATA_DIR="+dirs[i], "SPAWNER_NATS_LISTEN="+clientAddrs[i],
			"SPAWNER_NATS_SERVER_NAME=n"+strconv.Itoa(i), "SPAWNER_NATS_CLUSTER_LISTEN="+strings.TrimPrefix(routes[i], "nats-route://"),
			"SPAWNER_NATS_ROUTES="+strings.Join(routes, ","), "SPAWNER_NATS_CLUSTER_PASSWORD="+"route-"+tag)
	}
	servers := make([]*clusterProc, 3)
	// The first server writes the role keys; the others get copies.
	servers[0] = startProc(t, logDir, "nats-0", natsEnv(0), "nats")
	awaitTCP(t, clientAddrs[0])
	for _, d := range dirs[1:] {
		if err := os.MkdirAll(bus.CredentialsDir(d), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, role := range bus.Roles {
			seed, err := os.ReadFile(bus.CredentialsFile(dirs[0], role))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bus.CredentialsFile(d, role), seed, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 1; i < 3; i++ {
		servers[i] = startProc(t, logDir, "nats-"+strconv.Itoa(i), natsEnv(i), "nats")
		awaitTCP(t, clientAddrs[i])
	}
	var urls []string
	for _, a := range clientAddrs {
		urls = append(urls, "nats://"+a)
	}
	natsURL := strings.Join(urls, ",")
	httpAddr := "127.0.0.1:" + strconv.Itoa(faultFreePort(t))
	baseURL := "http://" + httpAddr
	compEnv := append(base[:len(base):len(base)], "SPAWNER_DATA_DIR="+dirs[0], "SPAWNER_NATS_URL="+natsURL,
		"SPAWNER_HTTP_ADDR="+httpAddr, "SPAWNER_PUBLIC_URL="+baseURL, "SPAWNER_PROVISIONER_NAME=cluster-provisioner")
	startProc(t, logDir, "provisioner", compEnv, "provisioner")
	startProc(t, logDir, "reaper", compEnv, "reaper")
	prober := startProc(t, logDir, "prober-0", compEnv, "prober")
	startProc(t, logDir, "prober-1", compEnv, "prober")
	startProc(t, logDir, "gateway", compEnv, "gateway")
	client := &http.Client{Timeout: 20 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := client.Get(baseURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready on the cluster after 60s (logs in %s)", logDir)
		}
	}

	// A component's first call to a cluster that has no JetStream leader
	// yet waits out its 10s timeout; wait for the provisioner to answer.
	reaperKey, err := nats.NkeyOptionFromSeed(bus.CredentialsFile(dirs[0], bus.RoleReaper))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	rnc, err := nats.Connect(natsURL, reaperKey, nats.CustomInboxPrefix(bus.InboxPrefix(subj, bus.RoleReaper)))
	if err != nil {
		t.Fatal(err)
	}
	stopReq, _ := json.Marshal(messages.StopRequest{SessionID: messages.NewSessionID(), Reason: messages.ReasonDeleted})
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, err := rnc.Request(subj.Stop(), stopReq, 2*time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no provisioner answers on the cluster after 60s (logs in %s)", logDir)
		}
		time.Sleep(250 * time.Millisecond)
	}
	rnc.Close()

	// spawn retries what a client would retry: a 5xx or a broken
	// connection while NATS elects new leaders.
	retries := 0
	spawn := func() messages.SpawnReply {
		t.Helper()
		var last string
		for attempt := 0; attempt < 10; attempt++ {
			if attempt > 0 {
				retries++
				t.Logf("retrying POST /init after: %s", last)
			}
			resp, err := client.Post(baseURL+"/init", "application/json", strings.NewReader("{}"))
			if err != nil {
				last = err.Error()
				time.Sleep(time.Second)
				continue
			}
			var rep messages.SpawnReply
			err = json.NewDecoder(resp.Body).Decode(&rep)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 && err == nil && rep.URL != "" {
				return rep
			}
			last = fmt.Sprintf("%d %+v", resp.StatusCode, rep.Error)
			time.Sleep(time.Second)
		}
		t.Fatalf("POST /init on the cluster: %s", last)
		return messages.SpawnReply{}
	}
	reachable := func(rep messages.SpawnReply) int {
		resp, err := client.Get(rep.URL)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var before []messages.SpawnReply
	for range 5 {
		rep := spawn()
		if code := reachable(rep); code != http.StatusOK {
			t.Fatalf("session %s through the proxy: %d", rep.SessionID, code)
		}
		before = append(before, rep)
	}

	// Kill -9 the server leading the session bucket, and a prober.
	opsKey, err := nats.NkeyOptionFromSeed(bus.CredentialsFile(dirs[0], bus.RoleOps))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL, opsKey, nats.CustomInboxPrefix(bus.InboxPrefix(subj, bus.RoleOps)),
		nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "KV_"+subj.SessionBucket())
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.Cluster == nil || info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("session bucket on the cluster: %+v, %v; want R3", info, err)
	}
	leader, _ := strconv.Atoi(strings.TrimPrefix(info.Cluster.Leader, "n"))
	t.Logf("killing %s, the session bucket's leader, and a prober", info.Cluster.Leader)
	t.Logf("the JetStream meta leader is n%d", metaLeader(t, logDir))
	killedAt := time.Now()
	servers[leader].kill()
	prober.kill()

	retries = 0
	after := []messages.SpawnReply{spawn()}
	t.Logf("first spawn after the kill answered %v after it, %d retries", time.Since(killedAt), retries)
	for range 4 {
		after = append(after, spawn())
	}
	t.Logf("5 spawns after the kill took %v, %d retries", time.Since(killedAt), retries)
	for _, rep := range append(before, after...) {
		if code := reachable(rep); code != http.StatusOK {
			t.Errorf("session %s through the proxy after the kill: %d", rep.SessionID, code)
		}
	}
	// Bring the server back, then kill -9 the JetStream meta leader.
	servers[leader] = startProc(t, logDir, "nats-"+strconv.Itoa(leader), natsEnv(leader), "nats")
	awaitTCP(t, clientAddrs[leader])
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		// Each ask gets its own time: one sent to the server that just
		// died would otherwise wait out the whole test's context.
		ictx, icancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := stream.Info(ictx)
		icancel()
		if err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2 &&
			info.Cluster.Replicas[0].Current && info.Cluster.Replicas[1].Current && !info.Cluster.Replicas[0].Offline && !info.Cluster.Replicas[1].Offline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted server did not catch up with the bucket: %+v %v", info, err)
		}
	}
	meta := metaLeader(t, logDir)
	t.Logf("killing n%d, the JetStream meta leader", meta)
	killedAt = time.Now()
	servers[meta].kill()
	retries = 0
	after = append(after, spawn())
	t.Logf("first spawn after killing the meta leader answered %v after it, %d retries", time.Since(killedAt), retries)
	for _, rep := range append(before, after...) {
		if code := reachable(rep); code != http.StatusOK {
			t.Errorf("session %s through the proxy after the second kill: %d", rep.SessionID, code)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, baseURL+"/sessions/"+before[0].SessionID, nil)
	if resp, err := client.Do(req); err != nil || resp.StatusCode >= 300 {
		t.Errorf("DELETE a session after the kill: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Idle, every session is reaped: the surviving prober probes them all
	// and the reaper stops them, on two of three servers.
	deadline := time.Now().Add(90 * time.Second)
	for len(faultApps(tag)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d apps still run 90s after the kill: not reaped (logs in %s)", len(faultApps(tag)), logDir)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("all %d sessions reaped %v after the last kill", len(before)+len(after), time.Since(killedAt))
}

// metaLeader reads which server last said it leads the JetStream meta
// group ("spawner nats" logs each change).
func metaLeader(t *testing.T, logDir string) int {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		found := -1
		for i := range 3 {
			data, _ := os.ReadFile(filepath.Join(logDir, "nats-"+strconv.Itoa(i)+".log"))
			lines := strings.Split(string(data), "\n")
			for j := len(lines) - 1; j >= 0; j-- {
				if strings.Contains(lines[j], "jetstream meta leader") {
					if strings.Contains(lines[j], "leader=true") {
						found = i
					}
					break
				}
			}
		}
		if found >= 0 {
			return found
		}
	}
	t.Fatal("no server says it leads the JetStream meta group")
	return -1
}
