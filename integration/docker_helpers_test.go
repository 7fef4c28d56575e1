package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/provisioner/docker"
)

// The images the Docker tests build from this test binary's spawner, with
// the Dockerfiles in build/, under tags of their own so that they never
// replace what "make images" built.
const (
	testImage     = "spawner:itest"
	testDemoImage = "spawner-demo:itest"
)

var (
	imagesOnce sync.Once
	imagesErr  string
)

// dockerEngine returns a client of the local engine, or skips the test
// when there is none, saying so.
func dockerEngine(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Skipf("skipping: no Docker client (%v); the Docker backend's tests need an engine", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		t.Skipf("skipping: the Docker engine does not answer (%v); the Docker backend's tests need one", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// buildTestImages builds both images from the suite's spawner binary (and
// spawner-demo, built here), so
// the Dockerfiles are what the tests exercise.
func buildTestImages() {
	dir, err := os.MkdirTemp("", "spawner-images-")
	if err != nil {
		imagesErr = err.Error()
		return
	}
	defer os.RemoveAll(dir)
	data, err := os.ReadFile(spawnerBin)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "spawner"), data, 0o755)
	}
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, "data"), 0o755)
	}
	if err == nil { // demo.Dockerfile holds the lean demo binary
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "spawner-demo"), "../cmd/spawner-demo")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // static, for FROM scratch
		var out []byte
		out, err = build.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("build spawner-demo: %w: %s", err, out)
		}
	}
	if err != nil {
		imagesErr = err.Error()
		return
	}
	for file, tag := range map[string]string{"spawner.Dockerfile": testImage, "demo.Dockerfile": testDemoImage} {
		out, err := exec.Command("docker", "build", "-q", "-f", filepath.Join("..", "build", file), "-t", tag, dir).CombinedOutput()
		if err != nil {
			imagesErr = err.Error() + ": " + string(out)
			return
		}
	}
}

// dockerTestConfig is testConfig with the Docker backend on a network of
// the test's own, removed with every container on it when the test ends.
func dockerTestConfig(t *testing.T, cli *client.Client) app.Config {
	t.Helper()
	imagesOnce.Do(buildTestImages)
	if imagesErr != "" {
		t.Fatalf("build test images: %s", imagesErr)
	}
	cfg := testConfig(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	net := "spawner-it-" + hex.EncodeToString(b[:])
	cfg.Provisioner.Backend = "docker"
	cfg.Docker.Image = testDemoImage
	cfg.Docker.SidecarImage = testImage
	cfg.Docker.Network = net
	cfg.Docker.Route = "ip"
	cfg.Docker.ReadOnly = true
	t.Cleanup(func() { removeNetwork(t, cli, net) })
	return cfg
}

// removeNetwork removes every container of the network's installation and
// then the network; it runs after the harness has stopped.
func removeNetwork(t *testing.T, cli *client.Client, net string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range installationContainers(t, cli, net) {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove leftover container %s: %v", c.ID, err)
		}
	}
	if err := cli.NetworkRemove(ctx, net); err != nil && !cerrdefs.IsNotFound(err) {
		t.Errorf("remove network %s: %v", net, err)
	}
}

// installationContainers lists the containers the backend created for the
// network, in any state.
func installationContainers(t *testing.T, cli *client.Client, net string) []container.Summary {
	t.Helper()
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", docker.LabelManagedBy+"="+docker.ManagedBy),
		filters.Arg("label", docker.LabelNetwork+"="+net),
	)})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return list
}

// sessionContainer inspects the session's container of the given role.
func sessionContainer(t *testing.T, cli *client.Client, sessionID, role string) (container.InspectResponse, bool) {
	t.Helper()
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", docker.LabelSession+"="+sessionID),
		filters.Arg("label", docker.LabelRole+"="+role),
	)})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	if len(list) == 0 {
		return container.InspectResponse{}, false
	}
	info, err := cli.ContainerInspect(context.Background(), list[0].ID)
	if cerrdefs.IsNotFound(err) {
		return container.InspectResponse{}, false // Removed since the list.
	}
	if err != nil {
		t.Fatalf("inspect %s: %v", list[0].ID, err)
	}
	return info, true
}

// networkExists reports whether the engine has the network.
func networkExists(t *testing.T, cli *client.Client, name string) bool {
	t.Helper()
	_, err := cli.NetworkInspect(context.Background(), name, network.InspectOptions{})
	return err == nil
}

// createLabelled creates (without starting) a container of image labelled
// as the Docker backend labels a session of the network net; attach puts
// it on that network.
func createLabelled(t *testing.T, cli *client.Client, image, sessionID, net string, attach bool) string {
	t.Helper()
	labels := map[string]string{docker.LabelManagedBy: docker.ManagedBy, docker.LabelSession: sessionID,
		docker.LabelRole: docker.RoleApp, docker.LabelNetwork: net}
	host := &container.HostConfig{CapDrop: []string{"ALL"}}
	var nc *network.NetworkingConfig
	if attach {
		host.NetworkMode = container.NetworkMode(net)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{net: {}}}
	}
	c, err := cli.ContainerCreate(context.Background(), &container.Config{Image: image, Env: []string{"PORT=8080"}, Labels: labels},
		host, nc, nil, "")
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	return c.ID
}
