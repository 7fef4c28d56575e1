package integration

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func writeCatalog(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "apps.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCatalogOnDocker: one catalog drives Docker sessions, and each app's
// image, resources and labels arrive on its container.
func TestCatalogOnDocker(t *testing.T) {
	cli := dockerEngine(t)
	cfg := dockerTestConfig(t, cli)
	cfg.Common.Apps = writeCatalog(t, `
default: small
apps:
  small:
    description: The demo with the installation's limits
  big:
    image: `+testDemoImage+`
    resources: {cpu: "0.5", memory: 300Mi}
    labels: {tier: big}
    idle_timeout: 45s
`)
	h := start(t, cfg)
	ctx := context.Background()
	for _, tc := range []struct {
		app    string
		memory int64
		cpus   int64
		tier   string
	}{
		{"big", 300 << 20, 500_000_000, "big"},
		{"small", 256 << 20, 1_000_000_000, ""},
	} {
		var rep messages.SpawnReply
		if code := post(t, h.BaseURL+"/init", `{"app":"`+tc.app+`"}`, &rep); code != http.StatusCreated {
			t.Fatalf("POST /init %s: %d %+v", tc.app, code, rep)
		}
		if code, _ := get(t, rep.URL); code != http.StatusOK {
			t.Errorf("%s: GET %s through the proxy: %d", tc.app, rep.URL, code)
		}
		info, err := cli.ContainerInspect(ctx, "spawner-"+rep.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		if info.HostConfig.Memory != tc.memory || info.HostConfig.NanoCPUs != tc.cpus || info.Config.Labels["tier"] != tc.tier {
			t.Errorf("%s: memory %d, cpus %d, tier %q; want %d, %d, %q", tc.app, info.HostConfig.Memory,
				info.HostConfig.NanoCPUs, info.Config.Labels["tier"], tc.memory, tc.cpus, tc.tier)
		}
		if s, _ := sessionOf(t, h, rep.SessionID); s.App != tc.app {
			t.Errorf("session app %q, want %s", s.App, tc.app)
		}
	}
}

// TestCatalogOnKubernetes: one catalog drives Kubernetes sessions, and an
// app's pod template and resources arrive on its pod, merged over
// SPAWNER_POD_TEMPLATE.
func TestCatalogOnKubernetes(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	cfg := kubeTestConfig(t, kc, ns, "metadata:\n  labels:\n    example.com/origin: template\n")
	cfg.Common.Apps = writeCatalog(t, `
default: small
apps:
  small: {}
  big:
    resources: {cpu: 500m, memory: 300Mi}
    labels: {tier: big}
    pod_template:
      metadata:
        annotations: {example.com/app: big}
`)
	h := start(t, cfg)
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"app":"big"}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if code, _ := get(t, rep.URL); code != http.StatusOK {
		t.Errorf("GET %s through the proxy: %d", rep.URL, code)
	}
	pod, _ := sessionObjects(t, client, ns, rep.SessionID)
	if pod == nil {
		t.Fatal("no pod")
	}
	if pod.Labels["example.com/origin"] != "template" || pod.Labels["tier"] != "big" || pod.Annotations["example.com/app"] != "big" {
		t.Errorf("pod labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != "app" {
			continue
		}
		if c.Resources.Limits.Cpu().MilliValue() != 500 || c.Resources.Limits.Memory().Value() != 300<<20 {
			t.Errorf("app container limits %v", c.Resources.Limits)
		}
	}
}
