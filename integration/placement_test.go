package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// placementPool is one pool of the leaf-node topology: its own "spawner
// nats" joined to the hub as a leaf, a provisioner and a gateway.
type placementPool struct {
	name, dir, natsAddr, baseURL string
	provisioner                  *clusterProc
}

// TestPlacementLeafNodes runs a hub NATS and two pools, a and b, each on
// its own NATS server joined to the hub as a leaf node with a JetStream
// domain of its own, each with a provisioner (process backend) and a
// gateway, and a hub gateway on the hub server, all as processes. It
// checks that a request reaches the pool it names or whose labels match
// and gets that pool's gateway in its URL, that a request naming no pool
// stays in the requester's pool, that a pool without a provisioner is a
// fast 503 naming it while the other pool goes on, that the hub's
// fallback list takes over, and that the hub sees both pools' events and
// sessions.
func TestPlacementLeafNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers and five components as processes")
	}
	tag := faultRandomHex(8)
	logDir := filepath.Join("artifacts", "fault-logs", t.Name())
	_ = os.RemoveAll(logDir)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var base []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") || strings.HasPrefix(name, "NATS_") {
			continue
		}
		base = append(base, kv)
	}
	leafPassword := "leaf-" + tag
	base = append(base, faultTagVar+"="+tag, "SPAWNER_LOG_LEVEL=info", "SPAWNER_SPAWN_TIMEOUT=10s",
		"SPAWNER_NATS_LEAF_PASSWORD="+leafPassword)
	env := func(extra ...string) []string { return append(base[:len(base):len(base)], extra...) }
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(faultFreePort(t)) }

	hubDir, hubAddr, hubLeaf := t.TempDir(), addr(), addr()
	startProc(t, logDir, "nats-hub", env("SPAWNER_DATA_DIR="+hubDir, "SPAWNER_NATS_LISTEN="+hubAddr,
		"SPAWNER_NATS_SERVER_NAME=hub", "SPAWNER_NATS_LEAF_LISTEN="+hubLeaf, "SPAWNER_NATS_JETSTREAM_DOMAIN=hub"), "nats")
	awaitTCP(t, hubAddr)

	pools := map[string]*placementPool{}
	labels := map[string]string{"a": "region=eu", "b": "region=us,gpu=true"}
	for _, name := range []string{"a", "b"} {
		p := &placementPool{name: name, dir: t.TempDir(), natsAddr: addr()}
		p.baseURL = "http://" + addr()
		startProc(t, logDir, "nats-"+name, env("SPAWNER_DATA_DIR="+p.dir, "SPAWNER_NATS_LISTEN="+p.natsAddr,
			"SPAWNER_NATS_SERVER_NAME=leaf-"+name, "SPAWNER_POOL="+name,
			"SPAWNER_NATS_LEAF_REMOTES=nats-leaf://"+hubLeaf), "nats")
		awaitTCP(t, p.natsAddr)
		comp := env("SPAWNER_DATA_DIR="+p.dir, "SPAWNER_NATS_URL=nats://"+p.natsAddr, "SPAWNER_POOL="+name,
			"SPAWNER_POOL_LABELS="+labels[name], "SPAWNER_HTTP_ADDR="+strings.TrimPrefix(p.baseURL, "http://"),
			"SPAWNER_PUBLIC_URL="+p.baseURL, "SPAWNER_PROVISIONER_NAME=prov-"+name)
		p.provisioner = startProc(t, logDir, "provisioner-"+name, comp, "provisioner")
		startProc(t, logDir, "gateway-"+name, comp, "gateway")
		pools[name] = p
	}
	hubURL := "http://" + addr()
	startProc(t, logDir, "gateway-hub", env("SPAWNER_DATA_DIR="+hubDir, "SPAWNER_NATS_URL=nats://"+hubAddr,
		"SPAWNER_HTTP_ADDR="+strings.TrimPrefix(hubURL, "http://"), "SPAWNER_PUBLIC_URL="+hubURL,
		"SPAWNER_HUB=true", "SPAWNER_POOL_FALLBACK=a"), "gateway")

	client := &http.Client{Timeout: 20 * time.Second}
	for _, u := range []string{pools["a"].baseURL, pools["b"].baseURL, hubURL} {
		awaitReady(t, client, u, logDir)
	}

	// The hub's operators watch every pool's events on the hub's server.
	opsKey, err := nats.NkeyOptionFromSeed(bus.CredentialsFile(hubDir, bus.RoleOps))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	hnc, err := nats.Connect("nats://"+hubAddr, opsKey, nats.CustomInboxPrefix(bus.InboxPrefix(subj, bus.RoleOps)))
	if err != nil {
		t.Fatal(err)
	}
	defer hnc.Close()
	var mu sync.Mutex
	readyIn := map[string]int{}
	if _, err := hnc.Subscribe(subj.PoolEvents(), func(m *nats.Msg) {
		var ev messages.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Type == messages.EventReady {
			mu.Lock()
			readyIn[ev.Pool]++
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		mu.Lock()
		t.Logf("ready events the hub saw, by pool: %v", readyIn)
		mu.Unlock()
	}()
	if err := hnc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Leaf connections come up after the servers answer clients; wait
	// until a request from a's gateway reaches b.
	awaitPool(t, client, pools["a"].baseURL, "b", logDir)

	a, b := pools["a"], pools["b"]
	// A request naming b, sent to a's gateway, is served by b, on b's
	// gateway, and proxied there.
	began := time.Now()
	rep := placeSpawn(t, client, a.baseURL, `{"pool":"b"}`, http.StatusCreated)
	t.Logf("a request for pool b through a's gateway took %s", time.Since(began).Round(time.Millisecond))
	if !strings.HasPrefix(rep.URL, b.baseURL+"/") {
		t.Errorf("a session of pool b has URL %s, want one on b's gateway %s", rep.URL, b.baseURL)
	}
	if s := placeGet(t, client, b.baseURL, rep.SessionID); s.Pool != "b" || s.Owner != "prov-b" {
		t.Errorf("b's gateway shows the session as pool %q, owner %q", s.Pool, s.Owner)
	}
	if code, _ := get(t, rep.URL); code != http.StatusOK {
		t.Errorf("GET %s through b's gateway: %d", rep.URL, code)
	}
	// Naming no pool keeps the request in the requester's pool.
	for _, p := range []*placementPool{a, b} {
		for range 4 {
			rep := placeSpawn(t, client, p.baseURL, `{}`, http.StatusCreated)
			if !strings.HasPrefix(rep.URL, p.baseURL+"/") {
				t.Errorf("a request to %s's gateway naming no pool got %s, not a session of its own pool", p.name, rep.URL)
			}
		}
	}
	// Placement by label finds b, the only pool with a GPU.
	rep = placeSpawn(t, client, a.baseURL, `{"placement":{"gpu":"true"}}`, http.StatusCreated)
	if !strings.HasPrefix(rep.URL, b.baseURL+"/") {
		t.Errorf("placement gpu=true got %s, want pool b", rep.URL)
	}
	if code, body := placePost(t, client, a.baseURL, `{"placement":{"region":"mars"}}`); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "region=mars") {
		t.Errorf("placement that no pool matches: %d %s", code, body)
	}

	// The hub lists both pools' sessions and sees both pools' events.
	hubList := placeList(t, client, hubURL+"/sessions")
	if !slices.Equal(hubList.Pools, []string{"", "a", "b"}) && !slices.Equal(hubList.Pools, []string{"a", "b"}) {
		t.Errorf("the hub lists pools %q", hubList.Pools)
	}
	byPool := map[string]int{}
	for _, s := range hubList.Sessions {
		byPool[s.Pool]++
	}
	if byPool["a"] != 4 || byPool["b"] != 6 || hubList.Count != 10 {
		t.Errorf("the hub lists %d sessions, by pool %v; want a:4 b:6", hubList.Count, byPool)
	}
	onlyB := placeList(t, client, hubURL+"/sessions?pool=b")
	if onlyB.Count != 6 || slices.ContainsFunc(onlyB.Sessions, func(s messages.Session) bool { return s.Pool != "b" }) {
		t.Errorf("?pool=b lists %d sessions: %+v", onlyB.Count, onlyB.Sessions)
	}
	if own := placeList(t, client, a.baseURL+"/sessions"); own.Count != 4 {
		t.Errorf("a's gateway lists %d sessions of its own pool, want 4", own.Count)
	}
	// b also served the warm-up request of awaitPool.
	eventually(t, 5*time.Second, "the hub sees the ready events of both pools", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return readyIn["a"] == 4 && readyIn["b"] == 7
	})

	// Without b's provisioner, a request for b is a fast 503 naming b; a
	// goes on, and the hub's fallback list sends b's requests to a.
	b.provisioner.kill()
	// Its server must first see the connection close and withdraw the
	// interest across the leaf connection; a request sent in that moment
	// is lost like any other in flight to a provisioner that died, and
	// times out. Under load that took longer than the test's first request.
	time.Sleep(time.Second)
	for i := range 3 {
		start := time.Now()
		code, body := placePost(t, client, a.baseURL, `{"pool":"b"}`)
		if took := time.Since(start); code != http.StatusServiceUnavailable || !strings.Contains(body, `pool \"b\"`) || took > time.Second {
			t.Errorf("request %d for pool b without its provisioner: %d %s after %s; want a 503 naming b within 1s", i, code, body, took)
		}
		if !strings.HasPrefix(strings.TrimSpace(body), `{"error":`) {
			t.Errorf("the 503 is not a JSON error: %s", body)
		}
		t.Logf("request %d for pool b without its provisioner: %d after %s", i, code, time.Since(start).Round(time.Microsecond))
	}
	rep = placeSpawn(t, client, a.baseURL, `{"pool":"a"}`, http.StatusCreated)
	if !strings.HasPrefix(rep.URL, a.baseURL+"/") {
		t.Errorf("pool a with b down: %s", rep.URL)
	}
	rep = placeSpawn(t, client, b.baseURL, `{}`, http.StatusCreated)
	if !strings.HasPrefix(rep.URL, a.baseURL+"/") {
		t.Errorf("b's gateway, with b's provisioner down, sent a request naming no pool to %s, not to a", rep.URL)
	}
	rep = placeSpawn(t, client, hubURL, `{"pool":"b"}`, http.StatusCreated)
	if !strings.HasPrefix(rep.URL, a.baseURL+"/") {
		t.Errorf("the hub's fallback sent a request for b to %s, want pool a", rep.URL)
	}
}

func awaitReady(t *testing.T, client *http.Client, baseURL, logDir string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := client.Get(baseURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s not ready after 60s (logs in %s)", baseURL, logDir)
		}
	}
}

// awaitPool waits until the pool directory seen from baseURL's gateway
// lists pool, that is until its provisioner's subscriptions crossed the
// leaf connections.
func awaitPool(t *testing.T, client *http.Client, baseURL, pool, logDir string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		code, body := placePost(t, client, baseURL, `{"pool":"`+pool+`","key":"warm-up"}`)
		if code == http.StatusCreated || code == http.StatusOK {
			var rep messages.SpawnReply
			_ = json.Unmarshal([]byte(body), &rep)
			req, _ := http.NewRequest(http.MethodDelete, strings.Split(rep.URL, "/p/")[0]+"/sessions/"+rep.SessionID, nil)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s not reachable from %s after 30s: %d %s (logs in %s)", pool, baseURL, code, body, logDir)
		}
	}
}

func placePost(t *testing.T, client *http.Client, baseURL, body string) (int, string) {
	t.Helper()
	resp, err := client.Post(baseURL+"/init", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s/init: %v", baseURL, err)
	}
	return resp.StatusCode, readAll(t, resp)
}

func placeSpawn(t *testing.T, client *http.Client, baseURL, body string, want int) messages.SpawnReply {
	t.Helper()
	code, out := placePost(t, client, baseURL, body)
	var rep messages.SpawnReply
	if code != want || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("POST %s/init %s: %d %s, want %d", baseURL, body, code, out, want)
	}
	return rep
}

func placeGet(t *testing.T, client *http.Client, baseURL, id string) messages.Session {
	t.Helper()
	resp, err := client.Get(baseURL + "/sessions/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s messages.Session
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&s) != nil {
		t.Fatalf("GET %s/sessions/%s: %d", baseURL, id, resp.StatusCode)
	}
	return s
}

type placedList struct {
	Count    int                `json:"count"`
	Pools    []string           `json:"pools"`
	Sessions []messages.Session `json:"sessions"`
}

func placeList(t *testing.T, client *http.Client, u string) placedList {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l placedList
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&l) != nil {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return l
}
