package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/client"
	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// gwEnv is a gateway on a real NATS server, served over real HTTP.
type gwEnv struct {
	bus *bustest.Env
	reg *registry.Registry
	gw  *Gateway
	srv servedAt
	api *client.Client
	mx  *metrics.Metrics
}

// servedAt is where a test's gateway listens.
type servedAt struct{ URL string }

// testConfig is the gateway's defaults with a spawn timeout of spawn.
func testConfig(spawn time.Duration) Config {
	cfg := settings.Defaults[Config]()
	cfg.SpawnTimeout = spawn
	return cfg
}

// drainConfig is testConfig with a drain timeout of drain.
func drainConfig(drain time.Duration) Config {
	cfg := testConfig(time.Second)
	cfg.DrainTimeout = drain
	return cfg
}

func newGWEnv(t *testing.T, tune func(*Config, *Deps)) *gwEnv {
	t.Helper()
	env := bustest.Run(t)
	reg := registry.New(env.KV)
	mx := metrics.New()
	cfg := testConfig(2 * time.Second)
	deps := Deps{NATS: env.Conn, Registry: reg, Metrics: mx}
	if tune != nil {
		tune(&cfg, &deps)
	}
	gw, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	// Served as Run serves it: session connections by the fast server,
	// the rest by net/http.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	srv := servedAt{URL: "http://" + ln.Addr().String()}
	api, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &gwEnv{bus: env, reg: reg, gw: gw, srv: srv, api: api, mx: deps.Metrics}
}

// publish sends a lifecycle event as the provisioner does.
func (e *gwEnv) publish(t *testing.T, typ messages.EventType, id string, mod ...func(*messages.Event)) {
	t.Helper()
	ev := messages.Event{Type: typ, SessionID: id, Time: time.Now().UTC(), Backend: "process"}
	for _, m := range mod {
		m(&ev)
	}
	data, _ := json.Marshal(ev)
	if err := e.bus.Conn.Publish(e.gw.subj.Event(typ), data); err != nil {
		t.Fatal(err)
	}
	if err := e.bus.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// waitStored waits until the event stream holds n messages, so a test
// knows what a replay will find.
func (e *gwEnv) waitStored(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s, err := e.bus.JS.Stream(context.Background(), e.gw.subj.EventStream())
		if err == nil {
			if info, err := s.Info(context.Background()); err == nil && info.State.Msgs >= n {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("event stream never held %d events", n)
}

// next reads one event with a deadline, so a broken stream fails the test
// instead of hanging it.
func next(t *testing.T, s *client.EventStream) (messages.Event, error) {
	t.Helper()
	type result struct {
		ev  messages.Event
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ev, err := s.Next()
		ch <- result{ev, err}
	}()
	select {
	case r := <-ch:
		return r.ev, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return messages.Event{}, nil
	}
}

func TestEventsReplaysTheNewestThenStreamsLive(t *testing.T) {
	e := newGWEnv(t, nil)
	ids := []string{messages.NewSessionID(), messages.NewSessionID(), messages.NewSessionID()}
	for _, id := range ids {
		e.publish(t, messages.EventCreating, id)
	}
	e.waitStored(t, 3)

	s, err := e.api.Events(t.Context(), client.EventsOptions{Replay: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, want := range ids[1:] {
		ev, err := next(t, s)
		if err != nil {
			t.Fatal(err)
		}
		if ev.SessionID != want || ev.Type != messages.EventCreating {
			t.Fatalf("replayed %s %s, want creating %s", ev.Type, ev.SessionID, want)
		}
	}
	e.publish(t, messages.EventReady, ids[2], func(ev *messages.Event) { ev.SpawnSeconds = 0.5 })
	ev, err := next(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != messages.EventReady || ev.SessionID != ids[2] || ev.SpawnSeconds != 0.5 {
		t.Fatalf("live event = %+v, want ready of %s", ev, ids[2])
	}
	if !s.Live() {
		t.Error("the stream did not mark the end of its replay")
	}
	if s.LastID() != "4" {
		t.Errorf("last id %q, want 4 (the stream sequence)", s.LastID())
	}
}

func TestEventsResumeAfterTheLastID(t *testing.T) {
	e := newGWEnv(t, nil)
	id := messages.NewSessionID()
	for _, typ := range []messages.EventType{messages.EventCreating, messages.EventReady, messages.EventStopping, messages.EventTerminated} {
		e.publish(t, typ, id)
	}
	e.waitStored(t, 4)
	s, err := e.api.Events(t.Context(), client.EventsOptions{After: 2, UntilLive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []messages.EventType
	for {
		ev, err := next(t, s)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Type)
	}
	if strings.Join(typeNames(got), ",") != "stopping,terminated" {
		t.Fatalf("resumed after 2 and got %v, want stopping,terminated", got)
	}
}

func typeNames(ts []messages.EventType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

func TestSessionEventsShowOneSessionAndEndWithIt(t *testing.T) {
	e := newGWEnv(t, nil)
	id, other := messages.NewSessionID(), messages.NewSessionID()
	if _, err := e.reg.Create(t.Context(), messages.Session{ID: id, Status: messages.StatusReady, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, messages.EventCreating, id)
	e.publish(t, messages.EventCreating, other)
	e.publish(t, messages.EventReady, id)
	e.waitStored(t, 3)

	s, err := e.api.Events(t.Context(), client.EventsOptions{SessionID: id})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, want := range []messages.EventType{messages.EventCreating, messages.EventReady} {
		ev, err := next(t, s)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != want || ev.SessionID != id {
			t.Fatalf("got %s of %s, want %s of %s", ev.Type, ev.SessionID, want, id)
		}
	}
	e.publish(t, messages.EventReady, other)
	e.publish(t, messages.EventTerminated, id, func(ev *messages.Event) { ev.Reason = messages.ReasonIdle })
	ev, err := next(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != messages.EventTerminated || ev.Reason != messages.ReasonIdle {
		t.Fatalf("got %+v, want terminated (idle) of %s", ev, id)
	}
	if _, err := next(t, s); !errors.Is(err, io.EOF) {
		t.Fatalf("after terminated: %v, want the stream to end", err)
	}
}

func TestSessionEventsOfAnEndedSession(t *testing.T) {
	e := newGWEnv(t, nil)
	id := messages.NewSessionID()
	e.publish(t, messages.EventCreating, id)
	e.publish(t, messages.EventFailed, id, func(ev *messages.Event) {
		ev.Reason, ev.Error = messages.ReasonFailed, "exec: no such file"
	})
	e.waitStored(t, 2)

	// The record is gone, but the history tells how it ended.
	s, err := e.api.Events(t.Context(), client.EventsOptions{SessionID: id})
	if err != nil {
		t.Fatal(err)
	}
	var got []messages.Event
	for {
		ev, err := next(t, s)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	s.Close()
	if len(got) != 2 || got[1].Type != messages.EventFailed || got[1].Error != "exec: no such file" {
		t.Fatalf("history = %+v, want creating then failed with its error", got)
	}

	// A reconnect after the last event gets 204, which stops EventSource.
	resp, err := http.Get(e.srv.URL + "/sessions/" + id + "/events?after=2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("reconnect after the end: %d, want 204", resp.StatusCode)
	}
}

func TestEventStreamsRejectBadInput(t *testing.T) {
	e := newGWEnv(t, nil)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/events?replay=-1", 400},
		{"/events?replay=many", 400},
		{"/events?replay=10001", 400},
		{"/events?after=yesterday", 400},
		{"/sessions/not-an-id/events", 404},
		{"/sessions/" + messages.NewSessionID() + "/events", 404},
	} {
		resp, err := http.Get(e.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error *messages.Error `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || err != nil || body.Error == nil || body.Error.Message == "" {
			t.Errorf("GET %s: %d %+v (%v), want %d with a JSON error", tc.path, resp.StatusCode, body.Error, err, tc.want)
		}
	}
}

func TestEventStreamsKeepAliveAndEndWhenTheClientGoes(t *testing.T) {
	e := newGWEnv(t, func(c *Config, _ *Deps) { c.EventsKeepalive = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/events?replay=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	seen := map[string]bool{}
	for !seen[": keepalive"] {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before a keepalive: %v (saw %v)", err, seen)
		}
		seen[strings.TrimSpace(line)] = true
	}
	if !seen[": live"] {
		t.Error("no live marker before the keepalive")
	}
	if got := e.gw.openStreams.Load(); got != 1 {
		t.Errorf("open streams = %d, want 1", got)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for e.gw.openStreams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream's handler still runs after its client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventStreamsEndAtShutdown(t *testing.T) {
	env := bustest.Run(t)
	gw, err := New(drainConfig(5*time.Minute),
		Deps{NATS: env.Conn, Registry: registry.New(env.KV)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	api, _ := client.New("http://" + ln.Addr().String())
	s, err := api.Events(t.Context(), client.EventsOptions{NoReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	// Without ending the stream, shutdown would wait out the 5-minute drain.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown waited for an open event stream")
	}
	if _, err := next(t, s); !errors.Is(err, io.EOF) {
		t.Errorf("stream after shutdown: %v, want EOF", err)
	}
}
