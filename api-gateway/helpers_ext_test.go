package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

// site is a gateway served on a real listener over a real NATS, with a
// second connection for the test's own responders and subscribers.
type site struct {
	env    *bustest.Env
	reg    *registry.Registry
	peer   *nats.Conn
	subj   messages.Subjects
	base   string
	client *http.Client
	// stopNow stops the gateway, draining it, ahead of the cleanup.
	stopNow func()
}

func newSite(t testing.TB) *site { return newSiteWith(t, nil) }

// newSiteWith is newSite with changes to the gateway's configuration.
func newSiteWith(t testing.TB, configure func(*gateway.Config, *gateway.Deps)) *site {
	t.Helper()
	env := bustest.Run(t)
	peer, err := nats.Connect(env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Close)
	reg := registry.New(env.KV)
	cfg := settings.Defaults[gateway.Config]()
	cfg.SpawnTimeout, cfg.DrainTimeout = 10*time.Second, time.Second
	deps := gateway.Deps{NATS: env.Conn, Registry: reg}
	if configure != nil {
		configure(&cfg, &deps)
	}
	gw, err := gateway.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	stopNow := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(stopNow)
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	s := &site{env: env, reg: reg, peer: peer, subj: subj, base: "http://" + ln.Addr().String(), stopNow: stopNow,
		// A connection per request: the gateway sorts connections by their
		// first request, so each /p/ request here reaches the fast server
		// and each API request net/http, as they would on fresh
		// connections from a browser.
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	deadline := time.Now().Add(patience)
	for {
		resp, err := s.client.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// respond serves subject on the peer connection with fn's reply.
func (s *site) respond(t testing.TB, subject string, fn func(data []byte) any) *recorder {
	t.Helper()
	rec := &recorder{}
	sub, err := s.peer.Subscribe(subject, func(m *nats.Msg) {
		rec.add(m.Data)
		out := fn(m.Data)
		var data []byte
		if raw, ok := out.([]byte); ok {
			data = raw
		} else {
			data, _ = json.Marshal(out)
		}
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.peer.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if subject == s.subj.Requested() || subject == s.subj.Sessions() {
		// A provisioner also answers pings, which the gateway sends first.
		ping, err := s.peer.Subscribe(s.subj.Ping(), func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ping.Unsubscribe() })
		// The server must have the ping subscription before the first
		// spawn asks it, or the spawn is told no provisioner runs.
		if err := s.peer.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// recorder keeps what reached NATS.
type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (r *recorder) add(data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, append([]byte(nil), data...))
}

func (r *recorder) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs...)
}

// addReady writes a ready record routed to upstream.
func (s *site) addReady(t testing.TB, upstream string) string {
	t.Helper()
	sess := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process",
		URL: s.base + "/p/x/", Upstream: upstream, CreatedAt: time.Now().UTC(), IdleTimeoutSeconds: 60}
	if _, err := s.reg.Create(context.Background(), sess); err != nil {
		t.Fatal(err)
	}
	return sess.ID
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (s *site) do(t testing.TB, method, path string, body io.Reader, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// awaitListed waits until GET /sessions, sent with hdr, lists id. The
// list is the gateway's copy of the registry, which sees a record written
// behind its back a moment after the write.
func (s *site) awaitListed(t testing.TB, id string, hdr ...string) {
	t.Helper()
	for deadline := time.Now().Add(patience); !strings.Contains(string(s.do(t, http.MethodGet, "/sessions", nil, hdr...).body), id); {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never listed session %s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiError decodes the error body every failure must have.
func apiError(t testing.TB, r response) messages.Error {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error with Content-Type %q: %s", ct, r.body)
	}
	var body struct {
		Error *messages.Error `json:"error"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error == nil || body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("status %d body %q is not an error object: %v", r.status, r.body, err)
	}
	return *body.Error
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// doRaw sends path as written, without the client's URL parsing, over a
// fresh connection, as a hostile client could.
func (s *site) doRaw(t testing.TB, path string) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(patience))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil && !isTimeout(err) {
		t.Fatalf("GET %q: %v", path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}
