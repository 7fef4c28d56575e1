package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
)

// filesDir is a directory python's http.server serves to every session.
// Isolated apps run as their own uid, so it must be world-readable.
func filesDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spawner-files-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from files\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// twoAppCatalog is the demo app and python's http.server, which has no
// /status and so is watched by the sidecar.
func twoAppCatalog(t *testing.T, demoPool, filesPool int, filesIdle string) string {
	t.Helper()
	body := fmt.Sprintf(`default: demo
apps:
  demo:
    description: The collaborative note
    command: exec %s demo
    idle_timeout: 60s
    warm_pool: %d
  files:
    description: A directory over HTTP
    command: exec python3 -m http.server "$PORT" --bind "$HOST" --directory %s
    status_source: sidecar
    idle_timeout: %s
    warm_pool: %d
    env: {LANG: C.UTF-8, API_KEY: not-for-listing}
    env_allow: [DATASET]
    labels: {tier: small}
`, shellQuote(spawnerBin), demoPool, shellQuote(filesDir(t)), filesIdle, filesPool)
	path := filepath.Join(t.TempDir(), "apps.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sessionOf(t *testing.T, h *harness, id string) (messages.Session, int) {
	t.Helper()
	code, body := get(t, h.BaseURL+"/sessions/"+id)
	var s messages.Session
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("GET /sessions/%s: %v", id, err)
		}
	}
	return s, code
}

// TestCatalogTwoApps runs the demo app and python's http.server in one
// installation: each is reachable through the proxy, and each is reaped on
// its own idle timeout.
func TestCatalogTwoApps(t *testing.T) {
	cfg := testConfig(t)
	cfg.Common.Apps = twoAppCatalog(t, 0, 0, "3s")
	h := start(t, cfg)
	ev := h.watchEvents(t)

	code, body := get(t, h.BaseURL+"/apps")
	if code != http.StatusOK || !strings.Contains(body, `"default":"demo"`) || !strings.Contains(body, `"name":"files"`) ||
		!strings.Contains(body, `"API_KEY"`) || strings.Contains(body, "not-for-listing") || strings.Contains(body, "http.server") {
		t.Fatalf("GET /apps: %d %s", code, body)
	}

	var demo, files messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &demo); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, demo)
	}
	if code := post(t, h.BaseURL+"/init", `{"app":"files","env":{"DATASET":"birds"}}`, &files); code != http.StatusCreated {
		t.Fatalf("POST /init files: %d %+v", code, files)
	}
	if code, body := get(t, files.URL+"hello.txt"); code != http.StatusOK || body != "hello from files\n" {
		t.Fatalf("GET %shello.txt: %d %q", files.URL, code, body)
	}
	if code, _ := get(t, demo.URL); code != http.StatusOK {
		t.Fatalf("GET %s: %d", demo.URL, code)
	}
	if s, _ := sessionOf(t, h, demo.SessionID); s.App != "demo" || s.IdleTimeoutSeconds != 60 {
		t.Errorf("demo session %+v", s)
	}
	if s, _ := sessionOf(t, h, files.SessionID); s.App != "files" || s.IdleTimeoutSeconds != 3 || s.Labels["tier"] != "small" {
		t.Errorf("files session %+v", s)
	}
	eventually(t, 10*time.Second, "the files ready event", func() bool { return len(ev.find(files.SessionID, messages.EventReady)) > 0 })
	if e := ev.find(files.SessionID, messages.EventReady)[0]; e.App != "files" {
		t.Errorf("ready event app %q", e.App)
	}

	var bad struct{ Error messages.Error }
	if code := post(t, h.BaseURL+"/init", `{"app":"jupyter"}`, &bad); code != http.StatusBadRequest ||
		!strings.Contains(bad.Error.Message, "the apps are demo, files") {
		t.Errorf("unknown app: %d %+v", code, bad)
	}
	if code := post(t, h.BaseURL+"/init", `{"app":"files","env":{"GREETING":"hi"}}`, &bad); code != http.StatusBadRequest {
		t.Errorf("env outside the app's env_allow: %d %+v", code, bad)
	}

	// files goes idle after 3s; demo, with 60s, stays.
	eventually(t, 30*time.Second, "the idle files session to be reaped", func() bool {
		_, code := sessionOf(t, h, files.SessionID)
		return code == http.StatusNotFound
	})
	if term := ev.find(files.SessionID, messages.EventTerminated); len(term) == 0 || term[0].Reason != messages.ReasonIdle || term[0].App != "files" {
		t.Errorf("files terminated events %+v", term)
	}
	if _, code := sessionOf(t, h, demo.SessionID); code != http.StatusOK {
		t.Errorf("the demo session was reaped with files: %d", code)
	}
	eventually(t, 10*time.Second, "the per-app session counts", func() bool {
		m := opsScrape(t, h.BaseURL+"/metrics")
		return m[`spawner_sessions_terminated_total{app="files",reason="idle"}`] == 1 &&
			m[`spawner_sessions{app="demo",status="ready"}`] == 1 && m[`spawner_sessions{app="files",status="ready"}`] == 0
	})
	if code, _ := get(t, demo.URL); code != http.StatusOK {
		t.Errorf("demo no longer reachable: %d", code)
	}
}

// TestCatalogWarmPoolsPerApp claims from two apps' pools at once: every
// request gets a session of the app it named.
func TestCatalogWarmPoolsPerApp(t *testing.T) {
	cfg := testConfig(t)
	cfg.Common.Apps = twoAppCatalog(t, 2, 1, "60s")
	h := start(t, cfg)
	pooled := func() map[string]string {
		out := map[string]string{}
		for _, s := range poolSessions(t, h).Sessions {
			if s.Pooled && s.Status == messages.StatusReady {
				out[s.ID] = s.App
			}
		}
		return out
	}
	count := func(p map[string]string, app string) int {
		n := 0
		for _, a := range p {
			if a == app {
				n++
			}
		}
		return n
	}
	eventually(t, 30*time.Second, "both pools to fill", func() bool {
		p := pooled()
		return count(p, "demo") == 2 && count(p, "files") == 1
	})
	warm := pooled()

	apps := []string{"demo", "files", "demo", "files", "demo", "files"}
	replies := make([]messages.SpawnReply, len(apps))
	codes := make([]int, len(apps))
	var wg sync.WaitGroup
	for i, a := range apps {
		wg.Go(func() { codes[i] = post(t, h.BaseURL+"/init", `{"app":"`+a+`"}`, &replies[i]) })
	}
	wg.Wait()
	claimed := map[string]int{}
	for i, a := range apps {
		rep := replies[i]
		if codes[i] != http.StatusCreated {
			t.Fatalf("POST /init %s: %d %+v", a, codes[i], rep)
		}
		s, _ := sessionOf(t, h, rep.SessionID)
		if s.App != a || s.Pooled {
			t.Errorf("asked for %s, got %s (pooled %v)", a, s.App, s.Pooled)
		}
		if from, ok := warm[rep.SessionID]; ok {
			if from != a {
				t.Errorf("a pooled %s session served a request for %s", from, a)
			}
			claimed[a]++
		}
		check := rep.URL
		if a == "files" {
			check += "hello.txt"
		}
		if code, _ := get(t, check); code != http.StatusOK {
			t.Errorf("%s session %s not reachable: %d", a, rep.SessionID, code)
		}
	}
	if claimed["demo"] == 0 || claimed["files"] == 0 {
		t.Errorf("pooled sessions claimed per app: %v, want some of each", claimed)
	}
	eventually(t, 30*time.Second, "both pools to refill", func() bool {
		p := pooled()
		return count(p, "demo") == 2 && count(p, "files") == 1
	})
}

// TestCatalogRefusedAtStart: a bad catalog stops Spawner at start, with a
// message that names the file, the app and the field.
func TestCatalogRefusedAtStart(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"duplicate name", "default: a\napps:\n  a: {}\n  a: {}\n", `"a" appears twice`},
		{"unknown field", "default: a\napps:\n  a: {comand: x}\n", `app "a": unknown field "comand"`},
		{"no default", "apps:\n  a: {}\n  b: {}\n", `no default`},
		{"bad duration", "default: a\napps:\n  a: {idle_timeout: soon}\n", `app "a": field "idle_timeout": "soon" is not a duration`},
		{"routing the gateway cannot serve", "default: a\napps:\n  a: {routing: subdomain}\n", `app "a": field "routing": subdomain: this installation routes by SPAWNER_ROUTING=path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			path := filepath.Join(t.TempDir(), "apps.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Common.Apps = path
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m := app.NewMain(cfg, slog.New(slog.DiscardHandler))
			m.DemoCommand = spawnerBin + " demo"
			err := m.Run(ctx, app.ModeAll)
			if err == nil || !strings.Contains(err.Error(), "catalog "+path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v\nwant an error naming %s and containing %q", err, path, tc.want)
			}
		})
	}
}

// TestCatalogInTheDashboard: the create form offers the catalog's apps,
// and a session started with one runs that app.
func TestCatalogInTheDashboard(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		t.Skip("no chromium binary found (install it with: apt-get install -y chromium); skipping the browser test")
	}
	cfg := testConfig(t)
	cfg.Common.Apps = twoAppCatalog(t, 0, 0, "60s")
	h := start(t, cfg)
	ctx, problems := openBrowser(t, bin)
	if err := chromedp.Do(ctx, chromedp.Navigate(h.BaseURL+"/")); err != nil {
		t.Fatal(err)
	}
	options, err := chromedp.Run(ctx, chromedp.Poll[string](`(() => {
		const o = [...document.querySelectorAll('#new-app option')].map(o => o.value);
		return o.length === 2 ? o.join(",") : null;
	})()`, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("the form never offered the two apps: %v", err)
	}
	if options != "demo,files" {
		t.Errorf("the form offers %q, want the default first: demo,files", options)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#new-app"), "files"),
		chromedp.SendKeys(chromedp.CSS("#new-key"), "files-from-the-browser"),
		chromedp.Click(chromedp.CSS("#new-btn")),
	); err != nil {
		t.Fatal(err)
	}
	id, err := chromedp.Run(ctx, chromedp.Poll[string](`(() => {
		const r = [...document.querySelectorAll('#rows tr[data-status="ready"]')].find(r => r.textContent.includes('files-from-the-browser'));
		return r && r.querySelector('.app') && r.querySelector('.app').textContent === 'files' ? r.dataset.id : null;
	})()`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("the files session started by the button never showed as ready with its app: %v", err)
	}
	if s, _ := sessionOf(t, h, id); s.App != "files" {
		t.Errorf("the clicked session runs %q, want files", s.App)
	}
	for _, p := range problems() {
		t.Errorf("browser: %s", p)
	}
}

// TestCatalogMixesPathAndPathKeep: in a path-routed installation an app
// may route by path-keep; its sessions see the /p/<id>/ prefix, the
// others do not.
func TestCatalogMixesPathAndPathKeep(t *testing.T) {
	indented := "      " + strings.ReplaceAll(echoApp, "\n", "\n      ")
	cfg := testConfig(t)
	cfg.Common.Apps = writeCatalog(t, "default: plain\napps:\n  plain:\n    command: |\n"+indented+
		"\n  keep:\n    routing: path-keep\n    command: |\n"+indented+"\n")
	h := start(t, cfg)
	for _, tc := range []struct{ app, want string }{{"plain", "/x?y=1"}, {"keep", "/p/%s/x?y=1"}} {
		var rep messages.SpawnReply
		if code := post(t, h.BaseURL+"/init", `{"app":"`+tc.app+`"}`, &rep); code != http.StatusCreated {
			t.Fatalf("POST /init %s: %d %+v", tc.app, code, rep)
		}
		code, body := get(t, rep.URL+"x?y=1")
		var e echoed
		if code != http.StatusOK || json.Unmarshal([]byte(body), &e) != nil {
			t.Fatalf("%s: GET: %d %q", tc.app, code, body)
		}
		want := tc.want
		if strings.Contains(want, "%s") {
			want = fmt.Sprintf(want, rep.SessionID)
		}
		if e.Path != want {
			t.Errorf("%s: the app saw %q, want %q", tc.app, e.Path, want)
		}
		if s, _ := sessionOf(t, h, rep.SessionID); tc.app == "keep" && s.Routing != messages.RoutingPathKeep {
			t.Errorf("keep session routing %q", s.Routing)
		}
	}

	// And the other way round: a path app in a path-keep installation.
	cfg = testConfig(t)
	cfg.Gateway.Routing, cfg.Provisioner.Routing = "path-keep", "path-keep"
	cfg.Common.Apps = writeCatalog(t, "default: keep\napps:\n  keep:\n    command: |\n"+indented+
		"\n  plain:\n    routing: path\n    command: |\n"+indented+"\n")
	h = start(t, cfg)
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"app":"plain"}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init plain: %d %+v", code, rep)
	}
	var e echoed
	if code, body := get(t, rep.URL+"x"); code != http.StatusOK || json.Unmarshal([]byte(body), &e) != nil || e.Path != "/x" {
		t.Errorf("a path app under path-keep routing saw %q (%d %q), want /x", e.Path, code, body)
	}
}
