package provisioner_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func mustCatalog(t *testing.T, body string) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Parse("apps.yaml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const testApps = `
default: demo
apps:
  demo:
    command: exec demo
    idle_timeout: 10m
    warm_pool: 2
  files:
    command: exec python3 -m http.server $PORT --bind $HOST
    status_source: sidecar
    idle_timeout: 30s
    max_lifetime: 8h
    warm_pool: 1
    env: {LANG: C.UTF-8, DATASET: none}
    env_allow: [DATASET]
    labels: {tier: small}
    image: files:1
    resources: {cpu: "1", memory: 1Gi}
    pod_template: {"spec": {"nodeSelector": {"disk": "ssd"}}}
`

// specs records what the backend was asked to start.
func recordSpecs(h *harness) func() map[string]provisioner.Spec {
	var mu sync.Mutex
	got := map[string]provisioner.Spec{}
	h.backend.startHook = func(_ context.Context, spec provisioner.Spec) error {
		mu.Lock()
		got[spec.SessionID] = spec
		mu.Unlock()
		return nil
	}
	return func() map[string]provisioner.Spec {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]provisioner.Spec{}
		for k, v := range got {
			out[k] = v
		}
		return out
	}
}

func TestSpawnRunsTheRequestedApp(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, mustCatalog(t, strings.ReplaceAll(testApps, "warm_pool", "# warm_pool")))
	specs := recordSpecs(h)
	h.run(t)

	rep := h.spawn(t, messages.SpawnRequest{App: "files", Env: map[string]string{"DATASET": "birds"}, Labels: map[string]string{"tier": "big", "team": "a"}})
	if rep.Error != nil {
		t.Fatal(rep.Error)
	}
	spec := specs()[rep.SessionID]
	if spec.App != "files" || !strings.Contains(spec.Command, "http.server") || spec.StatusSource != "sidecar" ||
		spec.Image != "files:1" || spec.Resources.Memory != "1Gi" || !strings.Contains(string(spec.PodTemplate), "ssd") {
		t.Fatalf("spec = %+v", spec)
	}
	if spec.Env["LANG"] != "C.UTF-8" || spec.Env["DATASET"] != "birds" {
		t.Errorf("env = %v: want the app's defaults under the request's", spec.Env)
	}
	if spec.Labels["tier"] != "small" || spec.Labels["team"] != "a" {
		t.Errorf("labels = %v: want the app's over the request's", spec.Labels)
	}
	entry, err := h.reg.Get(context.Background(), rep.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if s := entry.Session; s.App != "files" || s.IdleTimeoutSeconds != 30 || s.MaxLifetimeSeconds != 8*3600 {
		t.Errorf("record = %+v", s)
	}
	ev := h.events.wait(t, "ready", is(messages.EventReady, rep.SessionID))
	if ev.App != "files" {
		t.Errorf("ready event app = %q", ev.App)
	}

	rep = h.spawn(t, messages.SpawnRequest{})
	if rep.Error != nil {
		t.Fatal(rep.Error)
	}
	if spec := specs()[rep.SessionID]; spec.App != "demo" || spec.Command != "exec demo" {
		t.Errorf("default app spec = %+v", spec)
	}
	if entry, _ := h.reg.Get(context.Background(), rep.SessionID); entry.Session.IdleTimeoutSeconds != 600 {
		t.Errorf("demo idle timeout = %d, want 600", entry.Session.IdleTimeoutSeconds)
	}
}

func TestSpawnRefusesWhatTheAppDoesNotAllow(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, mustCatalog(t, strings.ReplaceAll(testApps, "warm_pool", "# warm_pool")))
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{App: "jupyter"})
	if rep.Error == nil || rep.Error.Code != messages.CodeBadRequest || !strings.Contains(rep.Error.Message, "the apps are demo, files") {
		t.Fatalf("unknown app: %+v", rep.Error)
	}
	rep = h.spawn(t, messages.SpawnRequest{App: "files", Env: map[string]string{"GREETING": "hi"}})
	if rep.Error == nil || rep.Error.Code != messages.CodeBadRequest || !strings.Contains(rep.Error.Message, "GREETING") {
		t.Fatalf("env outside the app's env_allow: %+v", rep.Error)
	}
	if n := h.backend.starts(); n != 0 {
		t.Errorf("%d starts for refused requests", n)
	}
}

func TestCatalogRoutingTheGatewayCannotServe(t *testing.T) {
	cfg := testConfig()
	_, err := provisioner.New(cfg, provisioner.Deps{Backend: newMemBackend(), Log: testLogger(t),
		Catalog: mustCatalog(t, "apps:\n  a:\n    routing: subdomain\n")})
	if err == nil || !strings.Contains(err.Error(), `catalog apps.yaml: app "a": field "routing": subdomain`) ||
		!strings.Contains(err.Error(), "SPAWNER_ROUTING=path") {
		t.Fatalf("err = %v", err)
	}
	// path and path-keep mix: both address sessions by /p/<id>/.
	if _, err := provisioner.New(cfg, provisioner.Deps{Backend: newMemBackend(), Log: testLogger(t),
		Catalog: mustCatalog(t, "apps:\n  a:\n    routing: path-keep\n")}); err != nil {
		t.Fatalf("path-keep in a path installation: %v", err)
	}
}

func TestWarmPoolsPerAppUnderConcurrency(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, mustCatalog(t, testApps))
	specs := recordSpecs(h)
	h.run(t)
	deadline := time.Now().Add(patience)
	for p := pooledSessions(h); len(p["demo"]) < 2 || len(p["files"]) < 1; p = pooledSessions(h) {
		if time.Now().After(deadline) {
			t.Fatalf("pools never filled: %v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	warm := pooledSessions(h)
	isWarm := map[string]string{}
	for app, ids := range warm {
		for _, id := range ids {
			isWarm[id] = app
		}
	}

	// Three of each app at once: two demo and one files come warm, the
	// rest start fresh, and none is handed a session of the other app.
	var wg sync.WaitGroup
	replies := make(chan struct {
		app string
		rep messages.SpawnReply
	}, 6)
	for _, app := range []string{"demo", "files", "demo", "files", "demo", "files"} {
		wg.Go(func() {
			rep := h.spawn(t, messages.SpawnRequest{App: app})
			replies <- struct {
				app string
				rep messages.SpawnReply
			}{app, rep}
		})
	}
	wg.Wait()
	close(replies)
	warmClaims := map[string]int{}
	for r := range replies {
		if r.rep.Error != nil {
			t.Fatalf("%s: %v", r.app, r.rep.Error)
		}
		entry, err := h.reg.Get(context.Background(), r.rep.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		if entry.Session.App != r.app || entry.Session.Pooled {
			t.Errorf("asked for %s, got a session of %q (pooled %v)", r.app, entry.Session.App, entry.Session.Pooled)
		}
		if spec := specs()[r.rep.SessionID]; spec.App != r.app {
			t.Errorf("asked for %s, the backend started %q", r.app, spec.App)
		}
		if app, ok := isWarm[r.rep.SessionID]; ok && app != r.app {
			t.Errorf("a warm %s session served a request for %s", app, r.app)
		}
		if !entry.Session.ClaimedAt.IsZero() {
			warmClaims[r.app]++
		}
	}
	// A refill may be claimed too while the requests run, so these are
	// lower bounds: each pool's first sessions went to its own app.
	if warmClaims["demo"] < 2 || warmClaims["files"] < 1 {
		t.Errorf("warm claims = %v, want at least demo 2 and files 1", warmClaims)
	}
}

// TestWarmPoolReplacesASessionThatEnded: a pooled session whose app ends
// before anyone claims it leaves the pool, and the pool starts another.
func TestWarmPoolReplacesASessionThatEnded(t *testing.T) {
	h := newHarness(t, testConfig(), mustCatalog(t, testApps))
	h.run(t)
	var first []string
	for deadline := time.Now().Add(patience); len(first) < 1; first = pooledSessions(h)["files"] {
		if time.Now().After(deadline) {
			t.Fatal("the files pool never filled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	gone := first[0]
	h.backend.Stop(context.Background(), gone) //nolint:errcheck // Stands for the app exiting; Stop reports its end.
	h.events.wait(t, "the pooled session's end", is(messages.EventTerminated, gone))
	// The pool refills on its own, well before its 5 s round.
	deadline := time.Now().Add(3 * time.Second)
	for {
		now := pooledSessions(h)["files"]
		if len(now) == 1 && now[0] != gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pooled files sessions %v 3 s after %s ended, want another one", now, gone)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pooledSessions lists the ready, unclaimed sessions in the registry by app.
func pooledSessions(h *harness) map[string][]string {
	entries, _ := h.reg.List(context.Background())
	out := map[string][]string{}
	for _, e := range entries {
		if e.Session.Pooled && e.Session.Status == messages.StatusReady {
			out[e.Session.App] = append(out[e.Session.App], e.Session.ID)
		}
	}
	return out
}
