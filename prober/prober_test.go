package prober_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/internal/testlog"
	"github.com/spawnerhq/spawner/internal/testrun"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/prober"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

type harness struct {
	env   *bustest.Env
	reg   *registry.Registry
	subj  messages.Subjects
	beats *beatLog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := bustest.Run(t)
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	h := &harness{env: env, reg: registry.New(env.KV), subj: subj}
	h.beats = watchBeats(t, env.Server.ClientURL(), subj)
	return h
}

func (h *harness) run(t *testing.T) {
	t.Helper()
	log := testLogger(t)
	p, err := prober.New(prober.Config{Layout: settings.Layout{Prefix: messages.DefaultPrefix}, Probing: settings.Probing{ProbeInterval: 30 * time.Millisecond}, Timeout: 2 * time.Second, Concurrency: 8},
		prober.Deps{NATS: h.env.Conn, Registry: h.reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	testrun.Background(t, patience, p.Run)
}

// addSession writes a record for a session whose /status is at statusURL.
func (h *harness) addSession(t *testing.T, status messages.Status, statusURL string) string {
	t.Helper()
	s := messages.Session{ID: messages.NewSessionID(), Status: status, Backend: "process", Upstream: "127.0.0.1:1",
		StatusURL: statusURL, CreatedAt: time.Now().UTC(), IdleTimeoutSeconds: 60}
	if _, err := h.reg.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

type beat struct {
	subject string
	messages.Heartbeat
}

// beatLog collects heartbeats as a reaper or dashboard would see them.
type beatLog struct {
	mu    sync.Mutex
	beats []beat
	added chan struct{}
}

func watchBeats(t *testing.T, url string, subj messages.Subjects) *beatLog {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l := &beatLog{added: make(chan struct{}, 1)}
	if _, err := nc.Subscribe(subj.Heartbeats(), func(m *nats.Msg) {
		var hb messages.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Errorf("undecodable heartbeat on %s: %s", m.Subject, m.Data)
			return
		}
		l.mu.Lock()
		l.beats = append(l.beats, beat{subject: m.Subject, Heartbeat: hb})
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *beatLog) of(id string) []beat {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []beat
	for _, b := range l.beats {
		if b.SessionID == id {
			out = append(out, b)
		}
	}
	return out
}

// await waits until id has at least n heartbeats and returns them.
func (l *beatLog) await(t *testing.T, id string, n int) []beat {
	t.Helper()
	deadline := time.After(patience)
	for {
		if got := l.of(id); len(got) >= n {
			return got
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("%d heartbeats for %s, want %d", len(l.of(id)), id, n)
		}
	}
}

func statusServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/status"
}

func TestHeartbeats(t *testing.T) {
	h := newHarness(t)
	good := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"active_connections":2,"seconds_inactive":7,"listening":true,"extra":"ignored"}`))
	}))
	broken := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	garbage := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("garbage!", 1024))
		for range (10 << 20) / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	h.run(t)

	for _, b := range h.beats.await(t, good, 2) {
		if b.subject != "spawner.heartbeat."+good {
			t.Errorf("heartbeat on %q", b.subject)
		}
		if !b.OK || b.Error != "" || b.ActiveConnections != 2 || b.SecondsInactive != 7 || !b.Listening ||
			!b.FailingSince.IsZero() || b.Time.IsZero() || b.LatencySeconds < 0 {
			t.Errorf("good heartbeat = %+v", b.Heartbeat)
		}
	}

	bad := h.beats.await(t, broken, 3)
	for _, b := range bad {
		if b.OK || !strings.Contains(b.Error, "500") || b.FailingSince.IsZero() {
			t.Errorf("failing heartbeat = %+v", b.Heartbeat)
		}
		// The first failure starts the run and every later one keeps it,
		// so any reaper can tell how long the session has been failing.
		if !b.FailingSince.Equal(bad[0].Time) {
			t.Errorf("failing_since %v, want the first failure's time %v", b.FailingSince, bad[0].Time)
		}
		if b.Time.Before(b.FailingSince) {
			t.Errorf("heartbeat time %v is before failing_since %v", b.Time, b.FailingSince)
		}
	}
	if !bad[2].Time.After(bad[0].Time) {
		t.Errorf("heartbeat times do not advance: %v, %v", bad[0].Time, bad[2].Time)
	}

	for _, b := range h.beats.await(t, garbage, 2) {
		if b.OK || b.Error == "" || b.FailingSince.IsZero() || b.Listening {
			t.Errorf("heartbeat of a 10 MB answer = %+v", b.Heartbeat)
		}
	}
}

func TestFailingSinceResetsOnRecovery(t *testing.T) {
	h := newHarness(t)
	var failing atomic.Bool
	failing.Store(true)
	id := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"listening":true}`))
	}))
	h.run(t)
	first := h.beats.await(t, id, 1)[0]
	if first.OK || first.FailingSince.IsZero() {
		t.Fatalf("first heartbeat = %+v, want a failure", first.Heartbeat)
	}
	failing.Store(false)
	var recovered beat
	for n := 2; ; n++ {
		if b := h.beats.await(t, id, n)[n-1]; b.OK {
			recovered = b
			break
		}
	}
	if !recovered.FailingSince.IsZero() {
		t.Errorf("failing_since %v survived a good probe", recovered.FailingSince)
	}
	failing.Store(true)
	n := len(h.beats.of(id))
	for ; ; n++ {
		if b := h.beats.await(t, id, n+1)[n]; !b.OK {
			if !b.FailingSince.After(first.FailingSince) {
				t.Errorf("a new run of failures kept the old failing_since %v", b.FailingSince)
			}
			break
		}
	}
}

func TestOnlyReadySessionsAreProbed(t *testing.T) {
	h := newHarness(t)
	var hits atomic.Int64
	url := statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"listening":true}`))
	})
	creating := h.addSession(t, messages.StatusCreating, url)
	stopping := h.addSession(t, messages.StatusStopping, url)
	noURL := h.addSession(t, messages.StatusReady, "")
	ready := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"listening":true}`))
	}))
	h.run(t)
	h.beats.await(t, ready, 5)
	for _, id := range []string{creating, stopping, noURL} {
		if n := len(h.beats.of(id)); n != 0 {
			t.Errorf("%d heartbeats for a session that is not ready", n)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d probes of sessions that are not ready", hits.Load())
	}

	// A session that becomes ready is probed from then on.
	entry, err := h.reg.Get(context.Background(), creating)
	if err != nil {
		t.Fatal(err)
	}
	entry.Session.Status = messages.StatusReady
	if _, err := h.reg.Update(context.Background(), entry.Session, entry.Revision); err != nil {
		t.Fatal(err)
	}
	if b := h.beats.await(t, creating, 1)[0]; !b.OK {
		t.Errorf("heartbeat after ready = %+v", b.Heartbeat)
	}
}

func TestDeletedSessionIsNoLongerProbed(t *testing.T) {
	h := newHarness(t)
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"listening":true}`)) }
	gone := h.addSession(t, messages.StatusReady, statusServer(t, ok))
	kept := h.addSession(t, messages.StatusReady, statusServer(t, ok))
	h.run(t)
	h.beats.await(t, gone, 2)
	if err := h.reg.Delete(context.Background(), gone, 0); err != nil {
		t.Fatal(err)
	}
	// A probe in flight when the record went may still report, so start
	// counting a few rounds later; after that nothing may arrive.
	base := len(h.beats.of(kept))
	h.beats.await(t, kept, base+3)
	after := len(h.beats.of(gone))
	h.beats.await(t, kept, base+10)
	if n := len(h.beats.of(gone)); n != after {
		t.Errorf("%d heartbeats for a deleted session", n-after)
	}
}

func TestHeartbeatsReachTheStream(t *testing.T) {
	h := newHarness(t)
	id := h.addSession(t, messages.StatusReady, statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"active_connections":1,"listening":true}`))
	}))
	h.run(t)
	h.beats.await(t, id, 1)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	s, err := h.env.JS.Stream(ctx, h.subj.HeartbeatStream())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, h.subj.Heartbeat(id))
	if err != nil {
		t.Fatalf("the heartbeat stream holds nothing for %s: %v", id, err)
	}
	var hb messages.Heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil || hb.SessionID != id || hb.ActiveConnections != 1 {
		t.Errorf("stored heartbeat %s: %v", msg.Data, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, cfg := range []prober.Config{
		{Layout: settings.Layout{Prefix: "a.b"}, Probing: settings.Probing{ProbeInterval: time.Second}, Timeout: time.Second},
		{Layout: settings.Layout{Prefix: "ok"}, Probing: settings.Probing{ProbeInterval: 0}, Timeout: time.Second},
		{Layout: settings.Layout{Prefix: "ok"}, Probing: settings.Probing{ProbeInterval: time.Second}, Timeout: -1, Concurrency: 1},
		{Layout: settings.Layout{Prefix: "ok"}, Probing: settings.Probing{ProbeInterval: time.Second}, Timeout: time.Second, Concurrency: 0},
	} {
		if _, err := prober.New(cfg, prober.Deps{Log: log}); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t) }

// A session that will cross its idle timeout before its next turn is
// probed again as it crosses, so the reaper sees it idle then and not up
// to an interval later.
func TestSessionIsProbedAsItCrossesItsIdleTimeout(t *testing.T) {
	h := newHarness(t)
	const interval, idle = 2 * time.Second, time.Second
	var mu sync.Mutex
	var idling bool
	var idleSince time.Time
	url := statusServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		var inactive int64
		if idling {
			if idleSince.IsZero() {
				idleSince = time.Now()
			}
			inactive = int64(time.Since(idleSince) / time.Second)
		}
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(messages.AppStatus{Listening: true, SecondsInactive: inactive})
	})
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process", Upstream: "127.0.0.1:1",
		StatusURL: url, CreatedAt: time.Now().UTC(), IdleTimeoutSeconds: int64(idle / time.Second)}
	if _, err := h.reg.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	p, err := prober.New(prober.Config{Layout: settings.Layout{Prefix: messages.DefaultPrefix}, Probing: settings.Probing{ProbeInterval: interval}, Timeout: 2 * time.Second, Concurrency: 8},
		prober.Deps{NATS: h.env.Conn, Registry: h.reg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	testrun.Background(t, patience, p.Run)
	// Once the prober has settled into its turns, the app goes idle from
	// its next probe on, whose next turn is an interval later.
	h.beats.await(t, s.ID, 2)
	mu.Lock()
	idling = true
	mu.Unlock()
	deadline := time.After(patience)
	for {
		beats := h.beats.of(s.ID)
		if n := len(beats); beats[n-1].SecondsInactive >= int64(idle/time.Second) {
			mu.Lock()
			after := beats[n-1].Time.Sub(idleSince)
			mu.Unlock()
			if after > idle+interval/4 {
				t.Fatalf("a heartbeat says idle %s after the app went idle; want it within %s of the crossing at %s, before the next turn at %s",
					after, interval/4, idle, interval)
			}
			return
		}
		select {
		case <-h.beats.added:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no heartbeat says the session is idle: %+v", beats)
		}
	}
}
