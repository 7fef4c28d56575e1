package provisioner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/testrun"
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

// TestExitsOfStopsEndNothingTwice: the backend reports the end of the
// instance a stop removed, and the provisioner, reading the record, does
// nothing more.
func TestExitsOfStopsEndNothingTwice(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	id := h.spawn(t, messages.SpawnRequest{}).SessionID
	h.stop(t, id, messages.ReasonDeleted)
	h.events.wait(t, "terminated", is(messages.EventTerminated, id))
	time.Sleep(500 * time.Millisecond) // The exit's turn in the work queue.
	if n := len(h.events.of(is(messages.EventTerminated, id))); n != 1 {
		t.Errorf("%d terminated events, want 1", n)
	}
	if n := h.backend.stopsOf(id); n != 1 {
		t.Errorf("the backend was asked %d times to stop the session, want 1", n)
	}
}

// TestExitDuringStartIsTheSpawns: an end reported while the spawn is in
// flight is the spawn's to handle. A start that fails rolls back with its
// own error, and one that succeeded over an instance already gone ends
// the session as exited.
func TestExitDuringStartIsTheSpawns(t *testing.T) {
	for _, fail := range []bool{true, false} {
		t.Run(fmt.Sprintf("start fails %v", fail), func(t *testing.T) {
			h := newHarness(t, testConfig())
			h.backend.startHook = func(_ context.Context, spec provisioner.Spec) error {
				h.backend.exit(provisioner.Exit{SessionID: spec.SessionID, Reason: messages.ReasonExited, Detail: "exit status 9"})
				time.Sleep(100 * time.Millisecond) // The exit is read while the record is creating.
				if fail {
					return errors.New("the app exited before it was ready")
				}
				return nil
			}
			h.run(t)
			rep := h.spawn(t, messages.SpawnRequest{})
			if fail {
				if rep.Error == nil || !strings.Contains(rep.Error.Message, "before it was ready") {
					t.Fatalf("spawn reply = %+v, want the start's own error", rep)
				}
				id := h.events.wait(t, "failed", func(e event) bool { return e.Type == messages.EventFailed }).SessionID
				time.Sleep(time.Second) // The exit's retries.
				if n := len(h.events.of(func(e event) bool {
					return e.SessionID == id && e.Type != messages.EventCreating && e.Type != messages.EventFailed
				})); n != 0 {
					t.Errorf("%d more events for the rolled back session", n)
				}
				h.assertGone(t, id)
				return
			}
			if rep.Error != nil {
				t.Fatalf("spawn reply = %+v", rep)
			}
			e := h.events.wait(t, "terminated", is(messages.EventTerminated, rep.SessionID))
			if e.Reason != messages.ReasonExited || e.Error != "exit status 9" {
				t.Errorf("terminated event = %+v", e.Event)
			}
			h.assertGone(t, rep.SessionID)
		})
	}
}

// TestStopGoesToTheOwner runs two provisioners of a local backend (the
// in-memory one with the process backend's trait), where each sees only
// the instances it started. Every stop, whichever of the two the queue group
// hands it to, ends the instance on its owner, once.
func TestStopGoesToTheOwner(t *testing.T) {
	cfg := testConfig()
	cfg.Backend, cfg.Name = "process", "prov-a"
	h := newHarness(t, cfg)
	h.backend.local = true
	h.run(t)
	cfgB := cfg
	cfgB.Name = "prov-b"
	ncB, err := nats.Connect(h.env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncB.Close)
	backendB := newMemBackend()
	backendB.local = true
	provB, err := provisioner.New(cfgB, provisioner.Deps{NATS: ncB, Registry: h.reg, Backend: backendB, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	testrun.Background(t, patience, provB.Run)
	<-provB.Ready()

	backends := map[string]*memBackend{"prov-a": h.backend, "prov-b": backendB}
	owners := map[string]string{}
	for len(owners) < 12 {
		rep := h.spawn(t, messages.SpawnRequest{})
		ready := h.events.wait(t, "ready", is(messages.EventReady, rep.SessionID))
		owners[rep.SessionID] = ready.Owner
	}
	for id, owner := range owners {
		if got := h.stop(t, id, messages.ReasonDeleted); !got.Found || got.Error != nil {
			t.Fatalf("stop %s = %+v", id, got)
		}
		h.events.wait(t, "terminated", is(messages.EventTerminated, id))
		if backends[owner].has(id) || backends[owner].stopsOf(id) != 1 {
			t.Errorf("session %s of %s: still running %v, stopped %d times by its owner",
				id, owner, backends[owner].has(id), backends[owner].stopsOf(id))
		}
	}
	if n := len(owners); h.backend.starts() == n || backendB.starts() == n {
		t.Fatalf("one provisioner started all %d sessions; the test needs both", n)
	}
}

// TestEndEventStoredBeforeRecordGoes: a session's record goes only once
// its terminated event is in the event stream, so an event that cannot be
// stored leaves the session for a later stop instead of ending it unseen.
// The stream is deleted to stand for NATS losing the event.
func TestEndEventStoredBeforeRecordGoes(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	rep := h.spawn(t, messages.SpawnRequest{})
	if rep.Error != nil {
		t.Fatalf("spawn: %+v", rep.Error)
	}
	ctx := context.Background()
	stream := h.subj.EventStream()
	if err := h.env.JS.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan messages.StopReply, 1)
	go func() {
		msg, err := h.client.Request(h.subj.Stop(), mustJSON(messages.StopRequest{SessionID: rep.SessionID}), patience)
		var r messages.StopReply
		if err == nil {
			err = json.Unmarshal(msg.Data, &r)
		}
		if err != nil {
			r.Error = messages.Errorf(messages.CodeUnavailable, "%v", err)
		}
		stopped <- r
	}()
	time.Sleep(time.Second)
	entry, err := h.reg.Get(ctx, rep.SessionID)
	if err != nil {
		t.Fatalf("the record went before its terminated event was stored: %v", err)
	}
	if entry.Session.Status != messages.StatusStopping {
		t.Errorf("record status = %s, want stopping", entry.Session.Status)
	}
	if _, err := bus.Ensure(ctx, h.env.JS, h.env.Config); err != nil {
		t.Fatal(err)
	}
	if r := <-stopped; r.Error != nil || !r.Found {
		t.Fatalf("stop reply = %+v", r)
	}
	h.assertGone(t, rep.SessionID)
	s, err := h.env.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, h.subj.Event(messages.EventTerminated))
	if err != nil {
		t.Fatalf("no terminated event in the stream: %v", err)
	}
	var ev messages.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.SessionID != rep.SessionID {
		t.Errorf("stored terminated event = %s (%v), want session %s's", msg.Data, err, rep.SessionID)
	}
}
