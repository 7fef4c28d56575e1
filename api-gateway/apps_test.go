package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
)

func TestAppsListsTheCatalogWithoutSecrets(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte("default: demo\napps:\n  demo: {description: The note}\n  files:\n    command: exec secret-cmd\n    env: {TOKEN: hunter2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newGWEnv(t, func(_ *Config, d *Deps) { d.Catalog = c })
	list, err := e.api.Apps(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if list.Default != "demo" || len(list.Apps) != 2 || list.Apps[0].Description != "The note" ||
		strings.Join(list.Apps[1].Env, ",") != "TOKEN" {
		t.Fatalf("apps = %+v", list)
	}
	resp, err := http.Get(e.srv.URL + "/apps")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "hunter2") || strings.Contains(string(body), "secret-cmd") {
		t.Errorf("GET /apps shows a secret: %s", body)
	}

	resp, err = http.Post(e.srv.URL+"/init", "application/json", strings.NewReader(`{"app":"jupyter"}`))
	if err != nil {
		t.Fatal(err)
	}
	var eb struct{ Error messages.Error }
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(eb.Error.Message, `app "jupyter" is not in the catalog; the apps are demo, files`) {
		t.Errorf("unknown app: %d %+v", resp.StatusCode, eb.Error)
	}
}

func TestAppsWithoutACatalogIsTheDefaultApp(t *testing.T) {
	e := newGWEnv(t, nil)
	list, err := e.api.Apps(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if list.Default != catalog.DefaultName || len(list.Apps) != 1 || list.Apps[0].Name != catalog.DefaultName {
		t.Fatalf("apps = %+v", list)
	}
}
