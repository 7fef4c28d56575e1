package integration

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// TestCatalogReload: a reloaded catalog is in force for /apps and /init at
// once, live sessions keep running, pooled sessions of a dropped app are
// stopped and a new app's pool fills; a bad catalog changes nothing.
func TestCatalogReload(t *testing.T) {
	demo := "exec " + shellQuote(spawnerBin) + " demo"
	cfg := testConfig(t)
	path := writeCatalog(t, "default: demo\napps:\n  demo: {command: "+demo+"}\n  old:\n    command: "+demo+"\n    warm_pool: 1\n")
	cfg.Common.Apps = path
	h := start(t, cfg)
	var live messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &live); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, live)
	}
	pooledOf := func(app string) []string {
		var ids []string
		for _, s := range poolSessions(t, h).Sessions {
			if s.Pooled && s.App == app {
				ids = append(ids, s.ID)
			}
		}
		return ids
	}
	eventually(t, 20*time.Second, "old's pool to fill", func() bool { return len(pooledOf("old")) == 1 })
	oldPooled := pooledOf("old")[0]

	if err := os.WriteFile(path, []byte("default: demo\napps:\n  demo: {command: "+demo+", description: reloaded}\n  new:\n    command: "+demo+"\n    warm_pool: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Main.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h.BaseURL+"/apps"); code != http.StatusOK || !strings.Contains(body, "reloaded") || strings.Contains(body, `"old"`) {
		t.Errorf("GET /apps after reload: %d %s", code, body)
	}
	var bad struct{ Error messages.Error }
	if code := post(t, h.BaseURL+"/init", `{"app":"old"}`, &bad); code != http.StatusBadRequest || !strings.Contains(bad.Error.Message, "demo, new") {
		t.Errorf("an app that left the catalog: %d %+v", code, bad)
	}
	eventually(t, 20*time.Second, "the dropped app's pooled session to stop, and new's pool to fill", func() bool {
		_, code := sessionOf(t, h, oldPooled)
		return code == http.StatusNotFound && len(pooledOf("new")) == 2
	})
	if code, _ := get(t, live.URL); code != http.StatusOK {
		t.Errorf("the live session did not survive the reload: %d", code)
	}
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"app":"new"}`, &rep); code != http.StatusCreated {
		t.Errorf("POST /init new: %d %+v", code, rep)
	}

	// A bad catalog is refused, and the one in force stays.
	if err := os.WriteFile(path, []byte("default: demo\napps:\n  demo: {idle_timeout: soon}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Main.Reload(); err == nil || !strings.Contains(err.Error(), `app "demo": field "idle_timeout"`) {
		t.Errorf("reload of a bad catalog: %v", err)
	}
	if code, body := get(t, h.BaseURL+"/apps"); code != http.StatusOK || !strings.Contains(body, `"new"`) {
		t.Errorf("GET /apps after a refused reload: %d %s", code, body)
	}
}

// TestCatalogReloadOnSIGHUP runs the binary and reloads its catalog with
// SIGHUP, as an operator would.
func TestCatalogReloadOnSIGHUP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := writeCatalog(t, "apps:\n  first: {}\n")
	cmd := exec.Command(spawnerBin)
	cmd.Env = append(os.Environ(), "SPAWNER_APPS="+path, "SPAWNER_HTTP_ADDR="+addr, "SPAWNER_DATA_DIR="+t.TempDir(),
		"SPAWNER_LOG_LEVEL=warn")
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	apps := func() string {
		resp, err := http.Get("http://" + addr + "/apps")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	eventually(t, 20*time.Second, "spawner to list the first catalog", func() bool { return strings.Contains(apps(), `"first"`) })
	if err := os.WriteFile(path, []byte("apps:\n  second: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "SIGHUP to put the second catalog in force", func() bool { return strings.Contains(apps(), `"second"`) })
}
