package provisioner_test

import (
	"context"
	"testing"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func TestStop(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{Key: "k", RequestID: "r"})
	id := rep.SessionID
	if got := h.stop(t, id, messages.ReasonIdle); !got.Found || got.Error != nil {
		t.Fatalf("stop = %+v", got)
	}
	stopping := h.events.wait(t, "stopping", is(messages.EventStopping, id))
	terminated := h.events.wait(t, "terminated", is(messages.EventTerminated, id))
	if stopping.Reason != messages.ReasonIdle || terminated.Reason != messages.ReasonIdle {
		t.Errorf("reasons = %q, %q; want idle", stopping.Reason, terminated.Reason)
	}
	if terminated.subject != h.subj.Event(messages.EventTerminated) || terminated.Key != "k" || terminated.RequestID != "r" ||
		terminated.Error != "test" || terminated.LifetimeSeconds <= 0 {
		t.Errorf("terminated event = %+v", terminated.Event)
	}
	h.assertGone(t, id)
	h.assertKeyFree(t, "k")
	if h.backend.stopsOf(id) != 1 {
		t.Errorf("backend.Stop called %d times, want 1", h.backend.stopsOf(id))
	}

	if got := h.stop(t, id, messages.ReasonIdle); got.Found || got.Error != nil {
		t.Fatalf("second stop = %+v, want found false", got)
	}
	// Events from one provisioner arrive in order, so once the next
	// session's creating event is here, any event of the second stop
	// would be too.
	marker := h.spawn(t, messages.SpawnRequest{})
	h.events.wait(t, "marker creating", is(messages.EventCreating, marker.SessionID))
	if n := len(h.events.of(is(messages.EventTerminated, id))); n != 1 {
		t.Errorf("%d terminated events, want 1", n)
	}
	if n := len(h.events.of(is(messages.EventStopping, id))); n != 1 {
		t.Errorf("%d stopping events, want 1", n)
	}
}

func TestStopUnknownAndBadRequests(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	if got := h.stop(t, messages.NewSessionID(), ""); got.Found || got.Error != nil {
		t.Errorf("stop of an unknown session = %+v, want found false", got)
	}
	for _, body := range []string{`{}`, `{"session_id":"../../x"}`, `nope`} {
		msg, err := h.client.Request(h.subj.Stop(), []byte(body), patience)
		if err != nil {
			t.Fatal(err)
		}
		var rep messages.StopReply
		if err := jsonUnmarshal(msg.Data, &rep); err != nil || rep.Error == nil || rep.Error.Code != messages.CodeBadRequest {
			t.Errorf("%s: reply %s", body, msg.Data)
		}
	}
}

func TestStopDefaultsToDeleted(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	id := h.spawn(t, messages.SpawnRequest{}).SessionID
	h.stop(t, id, "")
	if e := h.events.wait(t, "terminated", is(messages.EventTerminated, id)); e.Reason != messages.ReasonDeleted {
		t.Errorf("reason = %q, want deleted", e.Reason)
	}
}

func TestStopWhileCreatingRollsBack(t *testing.T) {
	h := newHarness(t, testConfig())
	gate := make(chan struct{})
	h.backend.startHook = func(context.Context, provisioner.Spec) error { <-gate; return nil }
	h.run(t)
	spawned := make(chan messages.SpawnReply, 1)
	go func() { spawned <- h.spawn(t, messages.SpawnRequest{Key: "k"}) }()
	id := h.events.wait(t, "creating", func(e event) bool { return e.Type == messages.EventCreating }).SessionID
	if got := h.stop(t, id, messages.ReasonDeleted); !got.Found || got.Error != nil {
		t.Fatalf("stop while creating = %+v", got)
	}
	close(gate)
	rep := <-spawned
	if rep.Error == nil || rep.Error.Code != messages.CodeSpawnFailed {
		t.Fatalf("spawn reply = %+v, want spawn_failed", rep)
	}
	h.events.wait(t, "failed", is(messages.EventFailed, id))
	if n := len(h.events.of(is(messages.EventReady, id))); n != 0 {
		t.Error("a stopped spawn still announced ready")
	}
	h.assertGone(t, id)
	h.assertKeyFree(t, "k")
}

func TestExitEndsSession(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	id := h.spawn(t, messages.SpawnRequest{}).SessionID
	h.backend.exit(provisioner.Exit{SessionID: id, Reason: messages.ReasonExited, Detail: "exit status 3"})
	e := h.events.wait(t, "terminated", is(messages.EventTerminated, id))
	if e.Reason != messages.ReasonExited || e.Error != "exit status 3" {
		t.Errorf("terminated event = %+v", e.Event)
	}
	h.assertGone(t, id)
}
