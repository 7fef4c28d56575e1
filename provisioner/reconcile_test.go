package provisioner_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func TestReconcileStopsOrphans(t *testing.T) {
	h := newHarness(t, testConfig())
	orphan := messages.NewSessionID()
	h.backend.add(provisioner.Instance{SessionID: orphan, Upstream: "10.0.0.9:1", Handle: "mem:orphan"})
	if err := h.prov.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := h.events.wait(t, "terminated", is(messages.EventTerminated, orphan))
	if e.Reason != messages.ReasonOrphaned {
		t.Errorf("reason = %q, want orphaned", e.Reason)
	}
	if h.backend.has(orphan) || h.backend.stopsOf(orphan) != 1 {
		t.Error("the orphan was not stopped")
	}
}

func TestReconcileEndsLostSessions(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	lost := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: backendName,
		Owner: "prov-test", Key: "lost-key", Upstream: "10.0.0.2:1", CreatedAt: time.Now().UTC()}
	if _, err := h.reg.Create(ctx, lost); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reg.ClaimKey(ctx, "lost-key", lost.ID); err != nil {
		t.Fatal(err)
	}
	// A session of another backend is none of this provisioner's business.
	foreign := lost
	foreign.ID, foreign.Backend, foreign.Key = messages.NewSessionID(), "kube", ""
	if _, err := h.reg.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	// A session with its instance is left alone.
	kept := lost
	kept.ID, kept.Key = messages.NewSessionID(), ""
	if _, err := h.reg.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	h.backend.add(provisioner.Instance{SessionID: kept.ID, Upstream: kept.Upstream})

	if err := h.prov.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e := h.events.wait(t, "terminated", is(messages.EventTerminated, lost.ID))
	if e.Reason != messages.ReasonLost {
		t.Errorf("reason = %q, want lost", e.Reason)
	}
	h.assertGone(t, lost.ID)
	h.assertKeyFree(t, "lost-key")
	for _, id := range []string{foreign.ID, kept.ID} {
		if _, err := h.reg.Get(ctx, id); err != nil {
			t.Errorf("reconcile removed %s: %v", id, err)
		}
	}
	if !h.backend.has(kept.ID) {
		t.Error("reconcile stopped a healthy instance")
	}
}

func TestReconcileFinishesAbandonedSpawn(t *testing.T) {
	cfg := testConfig()
	cfg.SpawnTimeout = time.Second
	h := newHarness(t, cfg)
	ctx := context.Background()
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusCreating, Backend: backendName,
		Owner: "prov-test", CreatedAt: time.Now().Add(-time.Hour).UTC()}
	if _, err := h.reg.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := h.prov.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if e := h.events.wait(t, "terminated", is(messages.EventTerminated, s.ID)); e.Reason != messages.ReasonFailed {
		t.Errorf("reason = %q, want failed", e.Reason)
	}
	h.assertGone(t, s.ID)
}

func TestNewRejectsBadConfig(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := testConfig()
	cfg.Prefix = "a.b"
	if _, err := provisioner.New(cfg, provisioner.Deps{Backend: newMemBackend(), Log: log}); err == nil {
		t.Error("a bad prefix was accepted")
	}
	cfg = testConfig()
	cfg.SpawnTimeout = 0
	if _, err := provisioner.New(cfg, provisioner.Deps{Backend: newMemBackend(), Log: log}); err == nil {
		t.Error("a zero spawn timeout was accepted")
	}
}
