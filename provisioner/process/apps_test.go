package process_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
)

// One backend serves two apps: the spec's command and status source win
// over the backend's own.
func TestOneBackendServesTwoApps(t *testing.T) {
	needPython(t)
	var mu sync.Mutex
	watched := 0
	watcher := func(host string, appPort int) (string, func(), error) {
		mu.Lock()
		watched++
		mu.Unlock()
		return "http://" + host + ":1/status", func() {}, nil
	}
	b, err := process.New(settings.Overlay(process.Config{Command: pyApp("ready")}), "", watcher, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runBackend(t, b)

	own := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID(), App: "demo"})
	if !strings.HasSuffix(own.StatusURL, "/status") || strings.Contains(own.StatusURL, ":1/") {
		t.Errorf("the backend's app: status URL %q, want the app's own", own.StatusURL)
	}
	files := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID(), App: "files",
		Command: `exec python3 -m http.server "$PORT" --bind "$HOST"`, StatusSource: "sidecar,proxy"})
	if files.StatusURL != "http://127.0.0.1:1/status" || !files.ProxyActivity {
		t.Errorf("files: status URL %q, proxy %v; want the watcher's and the proxy", files.StatusURL, files.ProxyActivity)
	}
	resp, err := http.Get("http://" + files.Upstream + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Directory listing") {
		t.Errorf("files serves %q, want python's directory listing", body)
	}
	list, _ := b.List(context.Background())
	proxied := 0
	for _, inst := range list {
		if inst.ProxyActivity {
			proxied++
		}
	}
	if len(list) != 2 || proxied != 1 {
		t.Errorf("list = %+v, want two instances, one counted by the proxy", list)
	}
	mu.Lock()
	defer mu.Unlock()
	if watched != 1 {
		t.Errorf("the watcher ran %d times, want once (for files)", watched)
	}
}
