package integration

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner/docker"
)

// sessionView is the part of GET /sessions/{id} these tests read.
type sessionView struct {
	Upstream  string `json:"upstream"`
	StatusURL string `json:"status_url"`
}

func getSession(t *testing.T, h *harness, id string) sessionView {
	t.Helper()
	code, body := get(t, h.BaseURL+"/sessions/"+id)
	var v sessionView
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil {
		t.Fatalf("GET /sessions/%s: %d %s", id, code, body)
	}
	return v
}

func deleteSession(t *testing.T, h *harness, id string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDockerSpawnProxyAndStop(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	net := cfg.Docker.Network
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"labels":{"team":"blue"},"env":{"GREETING":"hello"}}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if code, page := get(t, rep.URL); code != http.StatusOK || !strings.Contains(page, "<html") {
		t.Fatalf("GET %s through the proxy: %d %.200q", rep.URL, code, page)
	}
	code, body := get(t, rep.URL+"status")
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("GET status through the proxy: %d %q", code, body)
	}

	info, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
	if !ok {
		t.Fatal("no container carries the session's label")
	}
	wantLabels := map[string]string{docker.LabelManagedBy: "spawner", docker.LabelSession: rep.SessionID,
		docker.LabelRole: docker.RoleApp, docker.LabelNetwork: net, "team": "blue"}
	for k, v := range wantLabels {
		if info.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, info.Config.Labels[k], v)
		}
	}
	hc := info.HostConfig
	if hc.Memory != 256<<20 || hc.MemorySwap != 256<<20 || hc.NanoCPUs != 1e9 {
		t.Errorf("limits: memory %d swap %d nanocpus %d, want 256 MiB, no swap, 1 CPU", hc.Memory, hc.MemorySwap, hc.NanoCPUs)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != 512 {
		t.Errorf("pids limit %v, want 512", hc.PidsLimit)
	}
	if hc.Privileged || !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("privileged %v, cap drop %v, cap add %v: want unprivileged with every capability dropped", hc.Privileged, hc.CapDrop, hc.CapAdd)
	}
	if !slices.ContainsFunc(hc.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") }) {
		t.Errorf("security options %v lack no-new-privileges", hc.SecurityOpt)
	}
	if !hc.ReadonlyRootfs {
		t.Error("the root filesystem is writable although SPAWNER_DOCKER_READ_ONLY is set")
	}
	if info.Config.User != "65534:65534" {
		t.Errorf("the app runs as %q, want the image's unprivileged 65534:65534", info.Config.User)
	}
	env := info.Config.Env
	for _, want := range []string{"PORT=8080", "SPAWNER_SESSION_ID=" + rep.SessionID, "SPAWNER_SESSION_URL=" + rep.URL, "GREETING=hello"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %v lacks %s", env, want)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "HOST=") || strings.HasPrefix(kv, "SPAWNER_NATS") {
			t.Errorf("env has %s; the app must bind every interface and see none of Spawner's settings", kv)
		}
	}
	ep := info.NetworkSettings.Networks[net]
	if ep == nil || ep.IPAddress == "" {
		t.Fatalf("the container is not on network %s: %v", net, info.NetworkSettings.Networks)
	}
	if v := getSession(t, h, rep.SessionID); v.Upstream != ep.IPAddress+":8080" || v.StatusURL != "http://"+ep.IPAddress+":8080/status" {
		t.Errorf("upstream %q and status URL %q, want the container's address %s", v.Upstream, v.StatusURL, ep.IPAddress)
	}
	netInfo, err := cli.NetworkInspect(context.Background(), net, network.InspectOptions{})
	if err != nil || netInfo.Driver != "bridge" || netInfo.Labels[docker.LabelManagedBy] != "spawner" {
		t.Errorf("network %s was not created as a labelled bridge: %+v %v", net, netInfo, err)
	}

	if code := deleteSession(t, h, rep.SessionID); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if _, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp); ok {
		t.Fatal("the container is still there after DELETE answered")
	}
	if got := ev.find(rep.SessionID, messages.EventTerminated); len(got) != 1 || got[0].Reason != messages.ReasonDeleted {
		t.Fatalf("terminated events %+v, want one with reason deleted", got)
	}
	if code := deleteSession(t, h, rep.SessionID); code != http.StatusNotFound {
		t.Fatalf("second DELETE: %d, want 404", code)
	}

	// Stop on the backend itself: a removed session and one that never
	// existed are both successes, however often.
	b, err := docker.New(cfg.Docker, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{rep.SessionID, rep.SessionID, messages.NewSessionID()} {
		if err := b.Stop(context.Background(), id); err != nil {
			t.Fatalf("Stop(%s) of a missing session: %v", id, err)
		}
	}
	if left := installationContainers(t, cli, net); len(left) != 0 {
		t.Fatalf("%d containers left after stop", len(left))
	}
}

func TestDockerIdleReapRemovesContainer(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	cfg.Provisioner.IdleTimeout = 2 * time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if _, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp); !ok {
		t.Fatal("no container for the session")
	}
	eventually(t, 20*time.Second, "the idle session's container to be removed", func() bool {
		_, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
		return !ok
	})
	eventually(t, 5*time.Second, "the terminated event", func() bool { return len(ev.find(rep.SessionID, messages.EventTerminated)) == 1 })
	if got := ev.find(rep.SessionID, messages.EventTerminated)[0].Reason; got != messages.ReasonIdle {
		t.Fatalf("terminated with reason %q, want idle", got)
	}
	if code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID); code != http.StatusNotFound {
		t.Fatalf("the reaped session is still listed: %d", code)
	}
}

func TestDockerOrphanRemovedByReconcile(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	net := cfg.Docker.Network
	h := start(t, cfg)
	ev := h.watchEvents(t)
	ctx := context.Background()

	// A live session, which reconciliation must leave alone.
	var live messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &live); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, live)
	}
	// An orphan: a container of this installation with no session record,
	// as a provisioner killed between start and record would leave.
	orphanID := messages.NewSessionID()
	orphan := createLabelled(t, cli, testDemoImage, orphanID, net, true)
	if err := cli.ContainerStart(ctx, orphan, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	// A container of another installation, which this one must not touch.
	foreignNet := net + "-other"
	foreign := createLabelled(t, cli, testDemoImage, messages.NewSessionID(), foreignNet, false)
	t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), foreign, container.RemoveOptions{Force: true}) })

	eventually(t, 20*time.Second, "the orphan to be removed", func() bool {
		_, err := cli.ContainerInspect(ctx, orphan)
		return err != nil
	})
	eventually(t, 5*time.Second, "the orphan's terminated event", func() bool {
		got := ev.find(orphanID, messages.EventTerminated)
		return len(got) > 0 && got[0].Reason == messages.ReasonOrphaned
	})
	if _, ok := sessionContainer(t, cli, live.SessionID, docker.RoleApp); !ok {
		t.Fatal("reconciliation removed a live session's container")
	}
	if code, _ := get(t, live.URL+"status"); code != http.StatusOK {
		t.Fatalf("the live session stopped serving: %d", code)
	}
	if _, err := cli.ContainerInspect(ctx, foreign); err != nil {
		t.Fatalf("reconciliation removed another installation's container: %v", err)
	}
}

func TestDockerExitIsReported(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	info, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
	if !ok {
		t.Fatal("no container for the session")
	}
	if err := cli.ContainerKill(context.Background(), info.ID, "KILL"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the session to end as exited", func() bool {
		got := ev.find(rep.SessionID, messages.EventTerminated)
		return len(got) == 1 && got[0].Reason == messages.ReasonExited
	})
	if code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID); code != http.StatusNotFound {
		t.Fatalf("the exited session is still listed: %d", code)
	}
	eventually(t, 5*time.Second, "the exited container to be removed", func() bool {
		_, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
		return !ok
	})
}

func TestDockerSidecar(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	cfg.Docker.StatusSource = "sidecar"
	h := start(t, cfg)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	app, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
	if !ok {
		t.Fatal("no app container")
	}
	sc, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleSidecar)
	if !ok {
		t.Fatal("no sidecar container")
	}
	if got := string(sc.HostConfig.NetworkMode); got != "container:"+app.ID {
		t.Errorf("sidecar network mode %q, want the app's namespace container:%s", got, app.ID)
	}
	if !slices.Equal(sc.HostConfig.CapDrop, []string{"ALL"}) || !sc.HostConfig.ReadonlyRootfs || !slices.Contains(sc.Config.Env, "SPAWNER_APP_PORT=8080") {
		t.Errorf("sidecar: cap drop %v, read-only %v, env %v", sc.HostConfig.CapDrop, sc.HostConfig.ReadonlyRootfs, sc.Config.Env)
	}
	ip := app.NetworkSettings.Networks[cfg.Docker.Network].IPAddress
	v := getSession(t, h, rep.SessionID)
	if v.StatusURL != "http://"+ip+":7070/status" {
		t.Fatalf("status URL %q, want the sidecar on the app's address %s:7070", v.StatusURL, ip)
	}
	code, body := get(t, v.StatusURL)
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("the sidecar's /status: %d %q", code, body)
	}
	if code := deleteSession(t, h, rep.SessionID); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if left := installationContainers(t, cli, cfg.Docker.Network); len(left) != 0 {
		t.Fatalf("%d containers (app or sidecar) left after DELETE", len(left))
	}
}

func TestDockerMissingImageFails(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	cfg.Docker.Image = "spawner-missing:itest"
	h := start(t, cfg)

	var rep messages.SpawnReply
	code := post(t, h.BaseURL+"/init", "", &rep)
	if code < 500 || rep.Error == nil || rep.Error.Code != messages.CodeSpawnFailed {
		t.Fatalf("POST /init with a missing image: %d %+v, want a spawn_failed error", code, rep)
	}
	if !strings.Contains(rep.Error.Message, `"spawner-missing:itest" is not on the engine`) {
		t.Fatalf("error %q does not name the missing image", rep.Error.Message)
	}
	if left := installationContainers(t, cli, cfg.Docker.Network); len(left) != 0 {
		t.Fatalf("%d containers left after a failed spawn", len(left))
	}
}

func TestDockerAppExitingBeforeReadyFails(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	h := start(t, cfg)
	ev := h.watchEvents(t)

	// A malformed GOMEMLIMIT makes the Go runtime of the demo app abort
	// at start with exit code 2, as an app that crashes on boot would.
	var rep messages.SpawnReply
	code := post(t, h.BaseURL+"/init", `{"env":{"GOMEMLIMIT":"bogus"}}`, &rep)
	// spawn_failed rather than timeout: the exit ended the wait, not the
	// spawn deadline.
	if code < 500 || rep.Error == nil || rep.Error.Code != messages.CodeSpawnFailed {
		t.Fatalf("POST /init with an app that exits: %d %+v, want spawn_failed", code, rep)
	}
	if !strings.Contains(rep.Error.Message, "exited before it was ready (exit code 2)") {
		t.Fatalf("error %q does not say the container exited", rep.Error.Message)
	}
	if left := installationContainers(t, cli, cfg.Docker.Network); len(left) != 0 {
		t.Fatalf("%d containers left after a failed spawn", len(left))
	}
	eventually(t, 5*time.Second, "a failed event", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		return slices.ContainsFunc(ev.all, func(e messages.Event) bool { return e.Type == messages.EventFailed })
	})
}
