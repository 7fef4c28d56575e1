package integration

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/app"
)

// routingModesReach checks, on the backend base configures, that apps get
// SPAWNER_BASE_PATH and that every routing mode reaches them. The demo app
// serves its page under SPAWNER_BASE_PATH, so under path-keep routing the
// page answers at /p/<id>/ only if the variable arrived.
func routingModesReach(t *testing.T, base func(*testing.T) app.Config) {
	t.Run("path-keep", func(t *testing.T) {
		cfg := base(t)
		routingConfig(&cfg, "path-keep", "")
		h := start(t, cfg)
		id, url := spawnURL(t, h, `{}`)
		if code, page := get(t, url); code != http.StatusOK || !strings.Contains(page, id) {
			t.Fatalf("GET %s: %d %.200q", url, code, page)
		}
	})
	t.Run("subdomain", func(t *testing.T) {
		port := strconv.Itoa(freeLoopbackPort(t))
		cfg := base(t)
		cfg.Gateway.HTTPAddr = "127.0.0.1:" + port
		routingConfig(&cfg, "subdomain", "sessions.localhost:"+port)
		h := start(t, cfg)
		id, url := spawnURL(t, h, `{}`)
		host := id + ".sessions.localhost:" + port
		if url != "http://"+host+"/" {
			t.Fatalf("session URL %q", url)
		}
		req, _ := http.NewRequest(http.MethodGet, h.BaseURL+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), id) {
			t.Fatalf("GET / on %s: %d %.200q", host, resp.StatusCode, page)
		}
	})
}

func TestProcessRoutingModes(t *testing.T) {
	routingModesReach(t, func(t *testing.T) app.Config { return testConfig(t) })
}

func TestDockerRoutingModes(t *testing.T) {
	cli := dockerEngine(t)
	routingModesReach(t, func(t *testing.T) app.Config { return dockerTestConfig(t, cli) })
}

func TestKubeRoutingModes(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	routingModesReach(t, func(t *testing.T) app.Config {
		return kubeTestConfig(t, kc, kubeNamespace(t, client), kubeTemplate)
	})
}
