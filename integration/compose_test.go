package integration

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner/docker"
)

// composeEnabled is read when the package loads, before any test clears
// the SPAWNER_ variables. The compose test brings up a whole stack on a
// fixed port, so it runs only when asked: "make compose-test".
var composeEnabled = os.Getenv("SPAWNER_TEST_COMPOSE") == "1"

// The test's own compose project, so that it never touches a developer's
// stack; its port is 8080 unless SPAWNER_COMPOSE_PORT says otherwise.
const (
	composeProject = "spawnertest"
	composeNetwork = "spawnertest-sessions"
)

var composePort = cmpOr(os.Getenv("SPAWNER_COMPOSE_PORT"), "8080")

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// composeScript runs one of hack/compose-*.sh for the test's project.
func composeScript(t *testing.T, name string) {
	t.Helper()
	cmd := exec.Command("bash", "../hack/"+name)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPAWNER_") && !strings.HasPrefix(kv, "COMPOSE_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"COMPOSE_PROJECT_NAME="+composeProject,
		"SPAWNER_COMPOSE_PORT="+composePort,
		"SPAWNER_DOCKER_NETWORK="+composeNetwork,
		"SPAWNER_IDLE_TIMEOUT=5s",
		"SPAWNER_PROBE_INTERVAL=1s",
		"SPAWNER_RECONCILE_INTERVAL=2s",
	)
	out, err := cmd.CombinedOutput()
	t.Logf("%s:\n%s", name, out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// composeService finds the running container of one of the stack's services.
func composeService(t *testing.T, cli *client.Client, service string) container.InspectResponse {
	t.Helper()
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", "com.docker.compose.project="+composeProject),
		filters.Arg("label", "com.docker.compose.service="+service),
	)})
	if err != nil || len(list) != 1 {
		t.Fatalf("find the %s container: %d found, %v", service, len(list), err)
	}
	info, err := cli.ContainerInspect(context.Background(), list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func composeSpawn(t *testing.T, base, body string) messages.SpawnReply {
	t.Helper()
	var rep messages.SpawnReply
	if code := post(t, base+"/init", body, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if !strings.HasPrefix(rep.URL, base+"/p/") {
		t.Fatalf("session URL %q is not under the public URL %s", rep.URL, base)
	}
	if code, page := get(t, rep.URL); code != http.StatusOK || !strings.Contains(page, "<html") {
		t.Fatalf("GET %s through the proxy: %d %.200q", rep.URL, code, page)
	}
	return rep
}

func TestCompose(t *testing.T) {
	if !composeEnabled {
		t.Skip("skipping: the compose stack runs only with SPAWNER_TEST_COMPOSE=1, as \"make compose-test\" sets")
	}
	cli := dockerEngine(t)
	for _, image := range []string{"spawner:latest", "spawner-demo:latest"} {
		if _, err := cli.ImageInspect(context.Background(), image); err != nil {
			t.Fatalf("image %s: %v; run \"make images\" first", image, err)
		}
	}
	base := "http://127.0.0.1:" + composePort
	// A stack left by an earlier, interrupted run goes first.
	composeScript(t, "compose-down.sh")
	t.Cleanup(func() {
		composeScript(t, "compose-down.sh")
		left, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.compose.project="+composeProject))})
		if err != nil || len(left) != 0 {
			t.Errorf("compose-down left %d of the stack's containers (%v)", len(left), err)
		}
		if n := len(installationContainers(t, cli, composeNetwork)); n != 0 {
			t.Errorf("compose-down left %d session containers", n)
		}
	})
	composeScript(t, "compose-up.sh")

	t.Run("spawn, proxy and idle out", func(t *testing.T) {
		rep := composeSpawn(t, base, "")
		info, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
		if !ok {
			t.Fatal("no session container")
		}
		if info.Config.Image != "spawner-demo:latest" || info.Config.Labels[docker.LabelNetwork] != composeNetwork {
			t.Fatalf("container of image %q with labels %v", info.Config.Image, info.Config.Labels)
		}
		// The provisioner shares the sessions network, so it routes by name.
		code, body := get(t, base+"/sessions/"+rep.SessionID)
		if code != http.StatusOK || !strings.Contains(body, `"upstream":"spawner-`+rep.SessionID+`:8080"`) {
			t.Fatalf("GET /sessions/{id}: %d %s", code, body)
		}
		eventually(t, 30*time.Second, "the idle session's container to be removed", func() bool {
			_, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp)
			return !ok
		})
		if code, _ := get(t, base+"/sessions/"+rep.SessionID); code != http.StatusNotFound {
			t.Fatalf("the idled-out session is still listed: %d", code)
		}
		if n := len(installationContainers(t, cli, composeNetwork)); n != 0 {
			t.Fatalf("%d session containers leaked", n)
		}
	})

	t.Run("provisioner killed with SIGKILL restarts and reconciles", func(t *testing.T) {
		kept := composeSpawn(t, base, `{"idle_timeout_seconds":120}`)
		prov := composeService(t, cli, "provisioner")
		// kill -9 of the container's process: a crash, which the restart
		// policy answers. ("docker kill" counts as the operator's stop.)
		if err := syscall.Kill(prov.State.Pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", prov.State.Pid, err)
		}
		// An orphan appears while the provisioner is down, as a start cut
		// short by the crash would leave one.
		orphan := createLabelled(t, cli, "spawner-demo:latest", messages.NewSessionID(), composeNetwork, true)
		if err := cli.ContainerStart(context.Background(), orphan, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the provisioner to be restarted", func() bool {
			now := composeService(t, cli, "provisioner")
			return now.RestartCount > prov.RestartCount && now.State.Running
		})
		eventually(t, 30*time.Second, "the orphan to be removed by reconciliation", func() bool {
			_, err := cli.ContainerInspect(context.Background(), orphan)
			return err != nil
		})
		// The session started before the crash was adopted: still served,
		// and the restarted provisioner stops it.
		if code, _ := get(t, kept.URL+"status"); code != http.StatusOK {
			t.Fatalf("the session from before the crash is not served: %d", code)
		}
		req, _ := http.NewRequest(http.MethodDelete, base+"/sessions/"+kept.SessionID, nil)
		eventually(t, 30*time.Second, "DELETE to be served by the restarted provisioner", func() bool {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if _, ok := sessionContainer(t, cli, kept.SessionID, docker.RoleApp); ok {
			t.Fatal("the deleted session's container is still there")
		}
	})

	t.Run("docker kill stays down until compose-up", func(t *testing.T) {
		if err := cli.ContainerKill(context.Background(), composeService(t, cli, "provisioner").ID, "KILL"); err != nil {
			t.Fatal(err)
		}
		orphan := createLabelled(t, cli, "spawner-demo:latest", messages.NewSessionID(), composeNetwork, true)
		composeScript(t, "compose-up.sh")
		if !composeService(t, cli, "provisioner").State.Running {
			t.Fatal("compose-up did not bring the provisioner back")
		}
		eventually(t, 30*time.Second, "the orphan to be removed by reconciliation", func() bool {
			_, err := cli.ContainerInspect(context.Background(), orphan)
			return err != nil
		})
		rep := composeSpawn(t, base, "")
		// Left running on purpose: compose-down must remove it.
		if _, ok := sessionContainer(t, cli, rep.SessionID, docker.RoleApp); !ok {
			t.Fatal("no container for a session spawned after the restart")
		}
	})
}
