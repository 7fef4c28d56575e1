package provisioner_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// With a limit of 3, sixty concurrent spawns leave exactly three sessions,
// and every way a session ends gives its capacity back.
func TestMaxSessionsIsExactUnderConcurrency(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessions = 3
	h := newHarness(t, cfg)
	h.run(t)
	ctx := context.Background()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []string
	tooMany := 0
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := h.spawn(t, messages.SpawnRequest{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case rep.Error == nil:
				live = append(live, rep.SessionID)
			case rep.Error.Code == messages.CodeTooMany:
				tooMany++
			default:
				t.Errorf("spawn: %+v", rep.Error)
			}
		}()
	}
	wg.Wait()
	if len(live) != 3 || tooMany != 57 {
		t.Fatalf("%d live and %d refused of 60 spawns with a limit of 3", len(live), tooMany)
	}
	if n, err := h.reg.Count(ctx); err != nil || n != 3 {
		t.Fatalf("%d records (%v), want 3", n, err)
	}
	if n := h.backend.starts(); n != 3 {
		t.Errorf("the backend started %d instances, want 3", n)
	}
	full := func(when string) {
		t.Helper()
		if rep := h.spawn(t, messages.SpawnRequest{}); rep.Error == nil || rep.Error.Code != messages.CodeTooMany {
			t.Fatalf("%s: spawn = %+v, want too_many_sessions", when, rep)
		}
	}
	spawnOK := func(when string) string {
		t.Helper()
		rep := h.spawn(t, messages.SpawnRequest{})
		if rep.Error != nil {
			t.Fatalf("%s: spawn = %+v, want a session", when, rep.Error)
		}
		return rep.SessionID
	}

	// A stop gives its slot back.
	if rep := h.stop(t, live[0], messages.ReasonDeleted); !rep.Found || rep.Error != nil {
		t.Fatalf("stop: %+v", rep)
	}
	live[0] = spawnOK("after a stop")
	full("after the stopped session was replaced")

	// A failed spawn's rollback gives its slot back.
	h.stop(t, live[0], messages.ReasonDeleted)
	h.backend.mu.Lock()
	h.backend.startHook = func(context.Context, provisioner.Spec) error { return errors.New("no such image") }
	h.backend.mu.Unlock()
	if rep := h.spawn(t, messages.SpawnRequest{}); rep.Error == nil || rep.Error.Code != messages.CodeSpawnFailed {
		t.Fatalf("spawn with a failing backend = %+v, want spawn_failed", rep)
	}
	h.backend.mu.Lock()
	h.backend.startHook = nil
	h.backend.mu.Unlock()
	live[0] = spawnOK("after a rolled back spawn")
	full("after the rolled back slot was reused")

	// A session whose instance vanished ends as lost on reconcile, and
	// gives its slot back.
	h.backend.mu.Lock()
	delete(h.backend.instances, live[1])
	h.backend.mu.Unlock()
	if err := h.prov.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h.events.wait(t, "lost", is(messages.EventTerminated, live[1]))
	live[1] = spawnOK("after a lost session")
	full("after the lost session's slot was reused")

	// Ending everything leaves no slot taken.
	for _, id := range live {
		h.stop(t, id, messages.ReasonDeleted)
	}
	if res, err := h.reg.Reservations(ctx); err != nil || len(res) != 0 {
		t.Errorf("slots still taken after every session ended: %+v, %v", res, err)
	}
}
