package reaper_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/internal/testlog"
	"github.com/spawnerhq/spawner/internal/testrun"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/reaper"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

type harness struct {
	env   *bustest.Env
	reg   *registry.Registry
	subj  messages.Subjects
	clock *fakeClock
	stops *stopLog
	cfg   reaper.Config
	seq   uint64
}

// stopLog stands in for the provisioner: it records every stop request,
// fails the first failures of them, and otherwise ends the session by
// deleting its record, as the provisioner does before it answers.
type stopLog struct {
	mu       sync.Mutex
	reqs     []messages.StopRequest
	failures int
	added    chan struct{}
}

func newHarness(t *testing.T, cfg reaper.Config) *harness {
	t.Helper()
	env := bustest.Run(t)
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	h := &harness{env: env, reg: registry.New(env.KV), subj: subj, cfg: cfg,
		clock: &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		stops: &stopLog{added: make(chan struct{}, 1)}}
	nc, err := nats.Connect(env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// A stop in flight at the end of a test must finish before the
	// registry's connection closes under it.
	var handling sync.WaitGroup
	sub, err := nc.Subscribe(subj.Stop(), func(m *nats.Msg) {
		handling.Add(1)
		defer handling.Done()
		var req messages.StopRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("undecodable stop request %s", m.Data)
			return
		}
		h.stops.mu.Lock()
		h.stops.reqs = append(h.stops.reqs, req)
		fail := h.stops.failures > 0
		if fail {
			h.stops.failures--
		}
		h.stops.mu.Unlock()
		select {
		case h.stops.added <- struct{}{}:
		default:
		}
		rep := messages.StopReply{Found: true}
		if fail {
			rep = messages.StopReply{Error: messages.Errorf(messages.CodeUnavailable, "backend is down")}
		} else if err := h.reg.Delete(context.Background(), req.SessionID, 0); err != nil {
			t.Errorf("delete %s: %v", req.SessionID, err)
		}
		data, _ := json.Marshal(rep)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe(); handling.Wait() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

func defaultConfig() reaper.Config {
	return reaper.Config{Layout: settings.Layout{Prefix: messages.DefaultPrefix}, FailureGrace: 30 * time.Second, Sweep: time.Hour,
		StopTimeout: 5 * time.Second, Concurrency: 8}
}

// run starts the reaper and waits for its consumer.
func (h *harness) run(t *testing.T) {
	t.Helper()
	log := testLogger(t)
	r, err := reaper.New(h.cfg, reaper.Deps{JetStream: h.env.JS, NATS: h.env.Conn, Registry: h.reg, Now: h.clock.Now, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	testrun.Background(t, patience, r.Run)
	deadline := time.Now().Add(patience)
	for {
		_, err := h.env.JS.Consumer(context.Background(), h.subj.HeartbeatStream(), h.subj.ReaperConsumer())
		if err == nil {
			return
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) || time.Now().After(deadline) {
			t.Fatalf("reaper consumer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) addSession(t *testing.T, mod func(*messages.Session)) string {
	t.Helper()
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process",
		Upstream: "127.0.0.1:1", IdleTimeoutSeconds: 60, CreatedAt: h.clock.Now().Add(-time.Minute)}
	if mod != nil {
		mod(&s)
	}
	if _, err := h.reg.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

func (h *harness) publish(t *testing.T, hb messages.Heartbeat) {
	t.Helper()
	if hb.Time.IsZero() {
		hb.Time = h.clock.Now()
	}
	data, _ := json.Marshal(hb)
	ack, err := h.env.JS.Publish(context.Background(), h.subj.Heartbeat(hb.SessionID), data)
	if err != nil {
		t.Fatal(err)
	}
	h.seq = max(h.seq, ack.Sequence)
}

// settle waits until the reaper has acked every heartbeat published so
// far, which is when it has decided about each of them.
func (h *harness) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		cons, err := h.env.JS.Consumer(context.Background(), h.subj.HeartbeatStream(), h.subj.ReaperConsumer())
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= h.seq && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats not acked: floor %d of %d, %d pending, %d unacked",
				info.AckFloor.Stream, h.seq, info.NumPending, info.NumAckPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *stopLog) all() []messages.StopRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]messages.StopRequest(nil), l.reqs...)
}

func (l *stopLog) await(t *testing.T, n int) []messages.StopRequest {
	t.Helper()
	deadline := time.After(patience)
	for {
		if got := l.all(); len(got) >= n {
			return got
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("%d stop requests, want %d", len(l.all()), n)
		}
	}
}

func TestIdleSessionIsStoppedOnce(t *testing.T) {
	h := newHarness(t, defaultConfig())
	id := h.addSession(t, nil)
	h.run(t)
	hb := messages.Heartbeat{SessionID: id, OK: true, Listening: true, SecondsInactive: 61}
	h.publish(t, hb)
	h.publish(t, hb)
	h.settle(t)
	stops := h.stops.all()
	if len(stops) != 1 {
		t.Fatalf("%d stop requests, want exactly 1: %+v", len(stops), stops)
	}
	if stops[0].SessionID != id || stops[0].Reason != messages.ReasonIdle || !strings.Contains(stops[0].Detail, "61") {
		t.Errorf("stop = %+v", stops[0])
	}
}

func TestActiveSessionLivesOn(t *testing.T) {
	h := newHarness(t, defaultConfig())
	id := h.addSession(t, nil)
	busy := h.addSession(t, func(s *messages.Session) { s.IdleTimeoutSeconds = 0 })
	h.run(t)
	h.publish(t, messages.Heartbeat{SessionID: id, OK: true, Listening: true, SecondsInactive: 59})
	h.publish(t, messages.Heartbeat{SessionID: id, OK: true, Listening: true, ActiveConnections: 3})
	// An idle timeout of 0 means the session is never reaped for idleness.
	h.publish(t, messages.Heartbeat{SessionID: busy, OK: true, SecondsInactive: 1 << 40})
	// A failing probe carries no activity figures; they must not count.
	h.publish(t, messages.Heartbeat{SessionID: id, Error: "timeout", SecondsInactive: 1000, FailingSince: h.clock.Now()})
	h.settle(t)
	if stops := h.stops.all(); len(stops) != 0 {
		t.Errorf("stop requests for live sessions: %+v", stops)
	}
}

func TestLifetime(t *testing.T) {
	h := newHarness(t, defaultConfig())
	id := h.addSession(t, func(s *messages.Session) {
		s.MaxLifetimeSeconds = 3600
		s.CreatedAt = h.clock.Now().Add(-time.Hour - time.Second)
	})
	young := h.addSession(t, func(s *messages.Session) {
		s.MaxLifetimeSeconds = 3600
		s.CreatedAt = h.clock.Now().Add(-time.Hour + time.Minute)
	})
	h.run(t)
	h.publish(t, messages.Heartbeat{SessionID: id, OK: true, Listening: true, ActiveConnections: 5})
	h.publish(t, messages.Heartbeat{SessionID: young, OK: true, Listening: true, ActiveConnections: 5})
	h.settle(t)
	stops := h.stops.all()
	if len(stops) != 1 || stops[0].SessionID != id || stops[0].Reason != messages.ReasonLifetime {
		t.Errorf("stops = %+v, want one lifetime stop of %s", stops, id)
	}
}

func TestLifetimeSweepWithoutHeartbeats(t *testing.T) {
	cfg := defaultConfig()
	cfg.Sweep = 20 * time.Millisecond
	h := newHarness(t, cfg)
	id := h.addSession(t, func(s *messages.Session) {
		s.MaxLifetimeSeconds = 60
		s.CreatedAt = h.clock.Now().Add(-2 * time.Minute)
	})
	kept := h.addSession(t, func(s *messages.Session) { s.MaxLifetimeSeconds = 3600 })
	h.run(t)
	for _, s := range h.stops.await(t, 1) {
		if s.SessionID != id || s.Reason != messages.ReasonLifetime {
			t.Errorf("stop = %+v, want lifetime of %s", s, id)
		}
	}
	if _, err := h.reg.Get(context.Background(), kept); err != nil {
		t.Errorf("a young session was stopped: %v", err)
	}
}

func TestUnhealthyAfterGrace(t *testing.T) {
	h := newHarness(t, defaultConfig())
	sick := h.addSession(t, nil)
	flaky := h.addSession(t, nil)
	h.run(t)
	now := h.clock.Now()
	h.publish(t, messages.Heartbeat{SessionID: flaky, Error: "connection refused", FailingSince: now.Add(-29 * time.Second)})
	h.publish(t, messages.Heartbeat{SessionID: sick, Error: "connection refused", FailingSince: now.Add(-31 * time.Second)})
	h.settle(t)
	stops := h.stops.all()
	if len(stops) != 1 || stops[0].SessionID != sick || stops[0].Reason != messages.ReasonUnhealthy ||
		!strings.Contains(stops[0].Detail, "connection refused") {
		t.Errorf("stops = %+v, want one unhealthy stop of %s", stops, sick)
	}
}

func TestFailedStopIsRetried(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.stops.failures = 1
	id := h.addSession(t, nil)
	h.run(t)
	h.publish(t, messages.Heartbeat{SessionID: id, OK: true, SecondsInactive: 600})
	stops := h.stops.await(t, 2)
	for _, s := range stops {
		if s.SessionID != id || s.Reason != messages.ReasonIdle {
			t.Errorf("stop = %+v", s)
		}
	}
	h.settle(t)
	if got := h.stops.all(); len(got) != 2 {
		t.Errorf("%d stop requests, want 2 (one failed, one retried)", len(got))
	}
	if _, err := h.reg.Get(context.Background(), id); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the session survived the retried stop: %v", err)
	}
}

func TestHeartbeatsOfGoneOrStoppingSessions(t *testing.T) {
	h := newHarness(t, defaultConfig())
	stopping := h.addSession(t, func(s *messages.Session) { s.Status = messages.StatusStopping })
	h.run(t)
	h.publish(t, messages.Heartbeat{SessionID: messages.NewSessionID(), OK: true, SecondsInactive: 1 << 30})
	h.publish(t, messages.Heartbeat{SessionID: stopping, OK: true, SecondsInactive: 1 << 30})
	h.settle(t)
	if stops := h.stops.all(); len(stops) != 0 {
		t.Errorf("stops = %+v, want none", stops)
	}
}

func TestUndecodableHeartbeatIsDropped(t *testing.T) {
	h := newHarness(t, defaultConfig())
	id := h.addSession(t, nil)
	h.run(t)
	ctx := context.Background()
	for _, data := range []string{"garbage", `{"session_id":"../x"}`} {
		ack, err := h.env.JS.Publish(ctx, h.subj.Heartbeat(id), []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		h.seq = ack.Sequence
	}
	// A good heartbeat after the bad ones is still handled.
	h.publish(t, messages.Heartbeat{SessionID: id, OK: true, SecondsInactive: 61})
	if s := h.stops.await(t, 1)[0]; s.SessionID != id {
		t.Errorf("stop = %+v", s)
	}
	h.settle(t)
}

func TestNewRejectsBadPrefix(t *testing.T) {
	cfg := defaultConfig()
	cfg.Prefix = "a b"
	if _, err := reaper.New(cfg, reaper.Deps{}); err == nil {
		t.Fatal("accepted a bad prefix")
	}
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t) }

// TestNewRejectsNonPositiveSettings: the defaults live in the tags, so New
// reports a zero setting instead of quietly using a second default.
func TestNewRejectsNonPositiveSettings(t *testing.T) {
	for _, mutate := range []func(*reaper.Config){
		func(c *reaper.Config) { c.StopTimeout = 0 },
		func(c *reaper.Config) { c.Sweep = 0 },
		func(c *reaper.Config) { c.Concurrency = 0 },
	} {
		cfg := defaultConfig()
		mutate(&cfg)
		if _, err := reaper.New(cfg, reaper.Deps{}); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
