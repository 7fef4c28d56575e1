package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"

	"github.com/nats-io/nats.go"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/messages"
)

// servePool answers spawns and pings of one named pool, as its
// provisioners do, and records the requests.
func (s *site) servePool(t *testing.T, pool string) *recorder {
	t.Helper()
	ps := s.subj.ForPool(pool)
	ping, err := s.peer.Subscribe(ps.Ping(), func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ping.Unsubscribe() })
	return s.respond(t, ps.Requested(), func([]byte) any {
		return messages.SpawnReply{SessionID: messages.NewSessionID(), URL: "http://" + pool + ".example/p/x/",
			Status: messages.StatusReady, Created: true}
	})
}

func TestInitNamedPoolWithoutProvisionerIsFast503(t *testing.T) {
	s := newSite(t)
	start := time.Now()
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"pool":"eu-1"}`))
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `no provisioner of pool \"eu-1\"`) {
		t.Fatalf("a pool with no provisioner: %d %s", r.status, r.body)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the 503 took %s", took)
	}
}

func TestInitPoolFallback(t *testing.T) {
	s := newSiteWith(t, func(c *gateway.Config, _ *gateway.Deps) { c.PoolFallback = "eu-2, us-1" })
	us := s.servePool(t, "us-1")
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"pool":"eu-1","key":"k"}`))
	if r.status != http.StatusCreated || !strings.Contains(string(r.body), "us-1.example") {
		t.Fatalf("eu-1 and eu-2 have no provisioner, us-1 has: %d %s", r.status, r.body)
	}
	got := us.all()
	if len(got) != 1 {
		t.Fatalf("us-1 got %d requests", len(got))
	}
	req, err := messages.DecodeSpawnRequest(got[0])
	if err != nil || req.Pool != "us-1" || req.Key != "k" {
		t.Errorf("us-1 got %s (%v): want the request, naming us-1", got[0], err)
	}
	s2 := newSiteWith(t, func(c *gateway.Config, _ *gateway.Deps) { c.PoolFallback = "eu-2" })
	r = s2.do(t, http.MethodPost, "/init", strings.NewReader(`{"pool":"eu-1"}`))
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `\"eu-1\"`) || !strings.Contains(string(r.body), `\"eu-2\"`) {
		t.Errorf("no pool of the fallback list has a provisioner: %d %s", r.status, r.body)
	}
	if _, err := gateway.New(settings.Overlay(gateway.Config{PoolFallback: "a.b"}), gateway.Deps{NATS: s.env.Conn, Registry: s.reg}); err == nil {
		t.Error("a fallback pool that is no pool name was accepted")
	}
}

func TestInitPlacementByLabels(t *testing.T) {
	s := newSite(t)
	for _, p := range []messages.PoolInfo{
		{Pool: "eu-1", Labels: map[string]string{"region": "eu"}},
		{Pool: "us-gpu", Labels: map[string]string{"region": "us", "gpu": "true"}},
	} {
		data, _ := json.Marshal(p)
		sub, err := s.peer.Subscribe(s.subj.Pools(), func(m *nats.Msg) { _ = m.Respond(data) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	gpu := s.servePool(t, "us-gpu")
	eu := s.servePool(t, "eu-1")
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"placement":{"gpu":"true"}}`))
	if r.status != http.StatusCreated || !strings.Contains(string(r.body), "us-gpu.example") {
		t.Fatalf("placement gpu=true: %d %s", r.status, r.body)
	}
	if len(gpu.all()) != 1 || len(eu.all()) != 0 {
		t.Errorf("requests: us-gpu %d, eu-1 %d; want 1 and 0", len(gpu.all()), len(eu.all()))
	}
	// The provisioner checks the placement itself, so it stays in the request.
	if req, err := messages.DecodeSpawnRequest(gpu.all()[0]); err != nil || req.Placement["gpu"] != "true" {
		t.Errorf("us-gpu got %s (%v)", gpu.all()[0], err)
	}
	r = s.do(t, http.MethodPost, "/init", strings.NewReader(`{"placement":{"region":"mars"}}`))
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "region=mars") {
		t.Errorf("a placement no pool matches: %d %s", r.status, r.body)
	}
	r = s.do(t, http.MethodPost, "/init", strings.NewReader(`{"pool":"eu-1","placement":{"region":"eu"}}`))
	if r.status != http.StatusBadRequest {
		t.Errorf("pool and placement together: %d %s", r.status, r.body)
	}
}

func TestListOtherPools(t *testing.T) {
	s := newSite(t)
	own := s.addReady(t, "127.0.0.1:1")
	other := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Pool: "us-1",
		URL: "http://us.example/p/x/", Backend: "process", CreatedAt: time.Now().UTC()}
	list, _ := json.Marshal([]messages.Session{other})
	sub, err := s.peer.Subscribe(s.subj.SessionLists(), func(m *nats.Msg) {
		if want := string(m.Data); want == "*" || want == "us-1" {
			data, _ := json.Marshal(messages.PoolSessions{Pool: "us-1", Gateway: "gw-us", Sessions: list})
			_ = m.Respond(data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = s.peer.Flush()
	s.awaitListed(t, own)
	var out struct {
		Count    int                `json:"count"`
		Pools    []string           `json:"pools"`
		Sessions []messages.Session `json:"sessions"`
	}
	r := s.do(t, http.MethodGet, "/sessions?pool=*", nil)
	if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil || out.Count != 2 ||
		strings.Join(out.Pools, ",") != ",us-1" {
		t.Fatalf("every pool: %d %s", r.status, r.body)
	}
	out.Sessions, out.Pools = nil, nil
	r = s.do(t, http.MethodGet, "/sessions?pool=us-1", nil)
	if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil || out.Count != 1 || out.Sessions[0].ID != other.ID {
		t.Errorf("pool us-1: %d %s", r.status, r.body)
	}
	r = s.do(t, http.MethodGet, "/sessions", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), own) || strings.Contains(string(r.body), other.ID) {
		t.Errorf("own pool: %d %s", r.status, r.body)
	}
	if r = s.do(t, http.MethodGet, "/sessions?pool=nobody", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("a pool nobody answers for: %d %s", r.status, r.body)
	}
	if r = s.do(t, http.MethodGet, "/sessions?pool=a.b", nil); r.status != http.StatusBadRequest {
		t.Errorf("a pool that is no pool name: %d %s", r.status, r.body)
	}
}
