package docker

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/provisioner"
)

// A catalog app's image, resources and status source arrive on its
// container; an app that sets none gets the backend's.
func TestCatalogAppArrivesOnTheContainer(t *testing.T) {
	b, err := New(validConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	spec := provisioner.Spec{SessionID: "abc", App: "files", Image: "files:1", StatusSource: "sidecar,proxy",
		Resources: catalog.Resources{CPU: "500m", Memory: "1Gi", GPU: 1}}
	app, err := b.settingsOf(spec)
	if err != nil {
		t.Fatal(err)
	}
	c, h := b.appConfig(spec, app), b.appHostConfig(app)
	if c.Image != "files:1" || c.Labels[LabelStatusSource] != "sidecar,proxy" {
		t.Errorf("image %q, labels %v", c.Image, c.Labels)
	}
	if h.Memory != 1<<30 || h.MemorySwap != 1<<30 || h.NanoCPUs != 500_000_000 {
		t.Errorf("limits %+v", h.Resources)
	}
	if len(h.DeviceRequests) != 1 || h.DeviceRequests[0].Count != 1 || h.DeviceRequests[0].Capabilities[0][0] != "gpu" {
		t.Errorf("device requests %+v", h.DeviceRequests)
	}
	if inst := b.instance("abc", "172.18.0.5", "h", app.sources); inst.StatusURL != "http://172.18.0.5:7070/status" || !inst.ProxyActivity {
		t.Errorf("instance %+v, want the sidecar's status and the proxy", inst)
	}

	plain := provisioner.Spec{SessionID: "def", App: "demo"}
	app, _ = b.settingsOf(plain)
	if c, h := b.appConfig(plain, app), b.appHostConfig(app); c.Image != "spawner-demo:latest" || h.Memory != 256<<20 || h.DeviceRequests != nil {
		t.Errorf("plain app: image %q, memory %d, devices %v", c.Image, h.Memory, h.DeviceRequests)
	}
}

func TestCheckAppRefusesWhatDockerCannotRun(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte("apps:\n  tiny:\n    resources: {memory: 1Mi}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(func(a catalog.App) error { return CheckApp(validConfig(), a) })
	if err == nil || !strings.Contains(err.Error(), `catalog apps.yaml: app "tiny": field "resources.memory"`) {
		t.Fatalf("err = %v", err)
	}
}
