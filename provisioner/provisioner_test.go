package provisioner_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func TestSpawnReady(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{RequestID: "r-1", Key: "user-1", Labels: map[string]string{"team": "a"},
		Env: map[string]string{"GREETING": "hi"}, IdleTimeoutSeconds: 90})
	if rep.Error != nil {
		t.Fatalf("spawn: %v", rep.Error)
	}
	if !messages.ValidSessionID(rep.SessionID) || !rep.Created || rep.Status != messages.StatusReady || rep.Key != "user-1" {
		t.Fatalf("reply = %+v", rep)
	}
	if want := "https://spawner.example/p/" + rep.SessionID + "/"; rep.URL != want {
		t.Errorf("url = %q, want %q", rep.URL, want)
	}

	entry, err := h.reg.Get(context.Background(), rep.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	s := entry.Session
	inst, _ := h.backend.List(context.Background())
	if len(inst) != 1 || inst[0].SessionID != rep.SessionID {
		t.Fatalf("backend instances = %+v", inst)
	}
	if s.Status != messages.StatusReady || s.Upstream != inst[0].Upstream || s.StatusURL != inst[0].StatusURL ||
		s.Owner != "prov-test" || s.Backend != backendName || s.IdleTimeoutSeconds != 90 ||
		s.Key != "user-1" || s.RequestID != "r-1" || s.Labels["team"] != "a" || s.URL != rep.URL ||
		s.CreatedAt.IsZero() || s.ReadyAt.Before(s.CreatedAt) {
		t.Errorf("record = %+v", s)
	}

	creating := h.events.wait(t, "creating", is(messages.EventCreating, rep.SessionID))
	ready := h.events.wait(t, "ready", is(messages.EventReady, rep.SessionID))
	for _, e := range []event{creating, ready} {
		if e.subject != h.subj.Event(e.Type) {
			t.Errorf("%s event on %q", e.Type, e.subject)
		}
		if e.RequestID != "r-1" || e.Key != "user-1" || e.Backend != backendName || e.Owner != "prov-test" || e.Time.IsZero() {
			t.Errorf("%s event = %+v", e.Type, e.Event)
		}
	}
	if ready.Upstream != s.Upstream || ready.URL != rep.URL || ready.SpawnSeconds < 0 {
		t.Errorf("ready event = %+v", ready.Event)
	}
	all := h.events.of(func(e event) bool { return e.SessionID == rep.SessionID })
	if len(all) != 2 || all[0].Type != messages.EventCreating || all[1].Type != messages.EventReady {
		t.Errorf("events = %s, want creating then ready", h.events.types())
	}
}

func TestSpawnDefaultsFromConfig(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout, cfg.MaxLifetime = 2*time.Minute, time.Hour
	h := newHarness(t, cfg)
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{})
	if rep.Error != nil {
		t.Fatal(rep.Error)
	}
	entry, err := h.reg.Get(context.Background(), rep.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if entry.Session.IdleTimeoutSeconds != 120 || entry.Session.MaxLifetimeSeconds != 3600 {
		t.Errorf("record timeouts = %d, %d; want 120, 3600", entry.Session.IdleTimeoutSeconds, entry.Session.MaxLifetimeSeconds)
	}
}

func TestSpawnBadRequest(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	for _, body := range []string{`{"env":{"PORT":"1"}}`, `{"nope":1}`, `[`} {
		msg, err := h.client.Request(h.subj.Requested(), []byte(body), patience)
		if err != nil {
			t.Fatal(err)
		}
		var rep messages.SpawnReply
		if err := jsonUnmarshal(msg.Data, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Error == nil || rep.Error.Code != messages.CodeBadRequest || rep.SessionID != "" {
			t.Errorf("%s: reply = %s", body, msg.Data)
		}
	}
	if h.backend.starts() != 0 {
		t.Errorf("bad requests started %d instances", h.backend.starts())
	}
}

func TestSpawnKeyRace(t *testing.T) {
	cfg := testConfig()
	// The capacity check sits between claiming the key and writing the
	// record, so turning it on widens the window a racing spawn can hit.
	cfg.MaxSessions = 1000
	h := newHarness(t, cfg)
	gate := make(chan struct{})
	h.backend.startHook = func(ctx context.Context, _ provisioner.Spec) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.run(t)
	const n = 20
	replies := make([]messages.SpawnReply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { replies[i] = h.spawn(t, messages.SpawnRequest{Key: "shared"}) })
	}
	// Hold the start until every request is in, so the losers really race
	// a spawn in flight rather than a finished one.
	h.events.wait(t, "creating", func(e event) bool { return e.Type == messages.EventCreating })
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	if got := h.backend.starts(); got != 1 {
		t.Errorf("backend.Start called %d times, want 1", got)
	}
	created := 0
	for _, rep := range replies {
		if rep.Error != nil {
			t.Fatalf("a racing spawn failed: %v", rep.Error)
		}
		if rep.SessionID != replies[0].SessionID || rep.URL != replies[0].URL || rep.Key != "shared" || rep.Status != messages.StatusReady {
			t.Errorf("reply %+v differs from %+v", rep, replies[0])
		}
		if rep.Created {
			created++
		}
	}
	if created != 1 {
		t.Errorf("created is true in %d replies, want exactly 1", created)
	}
	if n := len(h.events.of(func(e event) bool { return e.Type == messages.EventCreating })); n != 1 {
		t.Errorf("%d creating events, want 1", n)
	}
}

func TestSpawnKeyReusedAfterStop(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	first := h.spawn(t, messages.SpawnRequest{Key: "k"})
	if again := h.spawn(t, messages.SpawnRequest{Key: "k"}); again.SessionID != first.SessionID || again.Created {
		t.Fatalf("second spawn with the key = %+v, want the first session", again)
	}
	if rep := h.stop(t, first.SessionID, messages.ReasonDeleted); !rep.Found || rep.Error != nil {
		t.Fatalf("stop = %+v", rep)
	}
	next := h.spawn(t, messages.SpawnRequest{Key: "k"})
	if next.Error != nil || !next.Created || next.SessionID == first.SessionID {
		t.Fatalf("spawn after the key's session ended = %+v, want a new session", next)
	}
}

func TestSpawnStartFails(t *testing.T) {
	h := newHarness(t, testConfig())
	h.backend.startHook = func(context.Context, provisioner.Spec) error { return errors.New("image pull failed") }
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{Key: "k1", RequestID: "r-fail"})
	if rep.Error == nil || rep.Error.Code != messages.CodeSpawnFailed || rep.SessionID != "" {
		t.Fatalf("reply = %+v, want spawn_failed", rep)
	}
	failed := h.events.wait(t, "failed", func(e event) bool { return e.Type == messages.EventFailed })
	id := failed.SessionID
	if !messages.ValidSessionID(id) || failed.RequestID != "r-fail" || failed.Key != "k1" ||
		failed.Reason != messages.ReasonFailed || failed.Error == "" || failed.subject != h.subj.Event(messages.EventFailed) {
		t.Errorf("failed event = %+v on %s", failed.Event, failed.subject)
	}
	h.assertGone(t, id)
	if h.backend.stopsOf(id) == 0 {
		t.Error("the backend was not asked to clean up the failed start")
	}
	h.assertKeyFree(t, "k1")
	if n, _ := h.reg.Count(context.Background()); n != 0 {
		t.Errorf("%d records left", n)
	}
}

func TestSpawnTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.SpawnTimeout = 200 * time.Millisecond
	h := newHarness(t, cfg)
	h.backend.startHook = func(ctx context.Context, _ provisioner.Spec) error {
		<-ctx.Done()
		return ctx.Err()
	}
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{})
	if rep.Error == nil || rep.Error.Code != messages.CodeTimeout {
		t.Fatalf("reply = %+v, want timeout", rep)
	}
	failed := h.events.wait(t, "failed", func(e event) bool { return e.Type == messages.EventFailed })
	h.assertGone(t, failed.SessionID)
}

func TestMaxSessions(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessions = 2
	h := newHarness(t, cfg)
	h.run(t)
	for range 2 {
		if rep := h.spawn(t, messages.SpawnRequest{}); rep.Error != nil {
			t.Fatal(rep.Error)
		}
	}
	rep := h.spawn(t, messages.SpawnRequest{Key: "late"})
	if rep.Error == nil || rep.Error.Code != messages.CodeTooMany {
		t.Fatalf("third spawn = %+v, want too_many_sessions", rep)
	}
	if h.backend.starts() != 2 {
		t.Errorf("%d starts, want 2", h.backend.starts())
	}
	h.assertKeyFree(t, "late")
}

func TestSpawnWithoutReplySubject(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	if err := h.client.Publish(h.subj.Requested(), mustJSON(messages.SpawnRequest{RequestID: "fire-and-forget"})); err != nil {
		t.Fatal(err)
	}
	ready := h.events.wait(t, "ready", func(e event) bool {
		return e.Type == messages.EventReady && e.RequestID == "fire-and-forget"
	})
	entries, err := h.reg.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.Session.RequestID == "fire-and-forget" {
			found = e.Session.ID == ready.SessionID && e.Session.Status == messages.StatusReady
		}
	}
	if !found {
		t.Errorf("no ready record with the request id among %+v", entries)
	}
}
