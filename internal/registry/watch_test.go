package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// watcher runs Watch in the background and hands its changes to the test.
func watcher(t *testing.T, reg *registry.Registry) <-chan registry.Change {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan registry.Change, 100)
	done := make(chan error, 1)
	go func() { done <- reg.Watch(ctx, func(c registry.Change) { ch <- c }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan registry.Change) registry.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(patience):
		t.Fatal("no change from Watch")
		return registry.Change{}
	}
}

func TestWatch(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	a, b := session(messages.StatusReady), session(messages.StatusCreating)
	for _, s := range []messages.Session{a, b} {
		if _, err := reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.ClaimKey(ctx, "not-a-session", a.ID); err != nil {
		t.Fatal(err)
	}
	ch := watcher(t, reg)

	initial := map[string]messages.Status{}
	for {
		c := next(t, ch)
		if c.Synced {
			if c.ID != "" || c.Deleted {
				t.Errorf("the synced marker carries a session: %+v", c)
			}
			break
		}
		initial[c.ID] = c.Session.Status
		if c.Session.ID != c.ID {
			t.Errorf("change for %s holds session %s", c.ID, c.Session.ID)
		}
	}
	want := map[string]messages.Status{a.ID: messages.StatusReady, b.ID: messages.StatusCreating}
	if len(initial) != len(want) || initial[a.ID] != want[a.ID] || initial[b.ID] != want[b.ID] {
		t.Fatalf("initial records = %v, want %v", initial, want)
	}

	entry, err := reg.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	b.Status, b.Upstream = messages.StatusReady, "127.0.0.1:1234"
	if _, err := reg.Update(ctx, b, entry.Revision); err != nil {
		t.Fatal(err)
	}
	if c := next(t, ch); c.ID != b.ID || c.Deleted || c.Session.Status != messages.StatusReady || c.Session.Upstream != "127.0.0.1:1234" {
		t.Fatalf("after update: %+v", c)
	}

	if err := reg.Delete(ctx, a.ID, 0); err != nil {
		t.Fatal(err)
	}
	if c := next(t, ch); c.ID != a.ID || !c.Deleted || c.Session.ID != "" {
		t.Fatalf("after delete: %+v", c)
	}

	c := session(messages.StatusCreating)
	if _, err := reg.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ch); got.ID != c.ID || got.Deleted || got.Session.Status != messages.StatusCreating {
		t.Fatalf("after create: %+v", got)
	}
	select {
	case extra := <-ch:
		t.Errorf("unexpected change %+v", extra)
	default:
	}
}

func TestWatchEmptyBucketSyncs(t *testing.T) {
	reg, _ := newRegistry(t)
	if c := next(t, watcher(t, reg)); !c.Synced {
		t.Fatalf("first change of an empty bucket = %+v, want Synced", c)
	}
}

func TestAwait(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusCreating)
	rev, err := reg.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var ready messages.Session
	go func() {
		var err error
		ready, err = reg.Await(ctx, s.ID)
		got <- err
	}()
	// Make a creating update first: Await must keep waiting through it.
	s.Labels = map[string]string{"step": "1"}
	rev, err = reg.Update(ctx, s, rev)
	if err != nil {
		t.Fatal(err)
	}
	s.Status, s.Upstream = messages.StatusReady, "127.0.0.1:5"
	if _, err := reg.Update(ctx, s, rev); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if ready.Status != messages.StatusReady || ready.Upstream != "127.0.0.1:5" {
		t.Errorf("Await = %+v", ready)
	}
	// Once past creating, Await answers at once.
	if again, err := reg.Await(ctx, s.ID); err != nil || again.Status != messages.StatusReady {
		t.Errorf("Await of a ready record = %+v, %v", again, err)
	}
}

func TestAwaitGone(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	if _, err := reg.Await(ctx, messages.NewSessionID()); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Await of a missing record = %v, want ErrNotFound", err)
	}
	s := session(messages.StatusCreating)
	if _, err := reg.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := reg.Await(ctx, s.ID)
		got <- err
	}()
	if err := reg.Delete(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Await of a record deleted while creating = %v, want ErrNotFound", err)
	}
	// A record deleted before the wait began is as gone as one never made.
	if _, err := reg.Await(ctx, s.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Await of a deleted record = %v, want ErrNotFound", err)
	}
}

func TestAwaitTimeout(t *testing.T) {
	reg, _ := newRegistry(t)
	s := session(messages.StatusCreating)
	if _, err := reg.Create(testContext(t), s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := reg.Await(ctx, s.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Await of a record stuck in creating = %v, want a deadline error", err)
	}
}
