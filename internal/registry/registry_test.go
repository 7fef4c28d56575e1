package registry_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

func newRegistry(t *testing.T) (*registry.Registry, *bustest.Env) {
	t.Helper()
	env := bustest.Run(t)
	return registry.New(env.KV), env
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	t.Cleanup(cancel)
	return ctx
}

func session(status messages.Status) messages.Session {
	return messages.Session{
		ID: messages.NewSessionID(), Status: status, URL: "http://gw/p/x/", Backend: "process",
		Owner: "p1", IdleTimeoutSeconds: 60, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
}

func TestCreateGet(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusCreating)
	s.Labels = map[string]string{"team": "a"}
	rev, err := reg.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if rev == 0 {
		t.Error("Create returned revision 0")
	}
	got, err := reg.Get(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev {
		t.Errorf("revision %d, want %d", got.Revision, rev)
	}
	if got.Session.ID != s.ID || got.Session.Status != s.Status || !got.Session.CreatedAt.Equal(s.CreatedAt) || got.Session.Labels["team"] != "a" {
		t.Errorf("Get = %+v, want %+v", got.Session, s)
	}
	if _, err := reg.Create(ctx, s); !errors.Is(err, registry.ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}
}

func TestGetMissingOrInvalid(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	for _, id := range []string{messages.NewSessionID(), "", "../x", "s.>", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"} {
		if _, err := reg.Get(ctx, id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestGetCorruptRecord(t *testing.T) {
	reg, env := newRegistry(t)
	ctx := testContext(t)
	id := messages.NewSessionID()
	if _, err := env.KV.Put(ctx, "s."+id, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	_, err := reg.Get(ctx, id)
	if err == nil || errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a corrupt record = %v, want a decode error", err)
	}
}

func TestUpdateCompareAndSwap(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusCreating)
	rev, err := reg.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	s.Status, s.Upstream = messages.StatusReady, "127.0.0.1:9"
	rev2, err := reg.Update(ctx, s, rev)
	if err != nil {
		t.Fatal(err)
	}
	if rev2 <= rev {
		t.Errorf("revision went from %d to %d", rev, rev2)
	}
	s.Status = messages.StatusStopping
	if _, err := reg.Update(ctx, s, rev); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("Update at a stale revision = %v, want ErrConflict", err)
	}
	got, err := reg.Get(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Session.Status != messages.StatusReady || got.Session.Upstream != "127.0.0.1:9" {
		t.Errorf("a conflicting update changed the record: %+v", got.Session)
	}
}

func TestUpdateMissing(t *testing.T) {
	reg, _ := newRegistry(t)
	if _, err := reg.Update(testContext(t), session(messages.StatusReady), 1); err == nil {
		t.Fatal("Update of a missing record succeeded")
	}
}

func TestDeleteWithRevision(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusReady)
	rev, err := reg.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	s.Status = messages.StatusStopping
	rev2, err := reg.Update(ctx, s, rev)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, s.ID, rev); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("Delete at a stale revision = %v, want ErrConflict", err)
	}
	if _, err := reg.Get(ctx, s.ID); err != nil {
		t.Fatalf("the record is gone after a refused delete: %v", err)
	}
	if err := reg.Delete(ctx, s.ID, rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get(ctx, s.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := reg.Delete(ctx, s.ID, 0); err != nil {
		t.Errorf("deleting a missing record: %v", err)
	}
	// The id can be reused after a delete, which a restarted spawn relies on.
	if _, err := reg.Create(ctx, s); err != nil {
		t.Errorf("Create after Delete: %v", err)
	}
}

func TestDeleteAnyRevision(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusReady)
	if _, err := reg.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get(ctx, s.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
}

func TestListAndCount(t *testing.T) {
	reg, env := newRegistry(t)
	ctx := testContext(t)
	if n, err := reg.Count(ctx); err != nil || n != 0 {
		t.Fatalf("Count of an empty bucket = %d, %v", n, err)
	}
	if l, err := reg.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("List of an empty bucket = %v, %v", l, err)
	}
	want := map[string]bool{}
	var gone string
	for i := range 5 {
		s := session(messages.StatusReady)
		if _, err := reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			gone = s.ID
		} else {
			want[s.ID] = true
		}
	}
	if err := reg.Delete(ctx, gone, 0); err != nil {
		t.Fatal(err)
	}
	// Key bindings live in the same bucket and are not sessions.
	if _, err := reg.ClaimKey(ctx, "some-key", messages.NewSessionID()); err != nil {
		t.Fatal(err)
	}
	// A record that cannot be decoded is left out of List but still counts.
	if _, err := env.KV.Put(ctx, "s."+messages.NewSessionID(), []byte("{")); err != nil {
		t.Fatal(err)
	}
	entries, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("List returned %d entries, want %d", len(entries), len(want))
	}
	for _, e := range entries {
		if !want[e.Session.ID] {
			t.Errorf("List returned unexpected %s", e.Session.ID)
		}
		if e.Revision == 0 {
			t.Errorf("List entry %s has revision 0", e.Session.ID)
		}
	}
	if n, err := reg.Count(ctx); err != nil || n != len(want)+1 {
		t.Errorf("Count = %d, %v; want %d", n, err, len(want)+1)
	}
}

func TestClaimKeyRace(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	const n = 50
	type result struct {
		mine, bound string
		err         error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			id := messages.NewSessionID()
			<-start
			bound, err := reg.ClaimKey(ctx, "shared key ✓", id)
			results[i] = result{mine: id, bound: bound, err: err}
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	var winner string
	for _, r := range results {
		switch {
		case r.err == nil:
			winners++
			winner = r.mine
			if r.bound != r.mine {
				t.Errorf("winner got bound id %q, want its own %q", r.bound, r.mine)
			}
		case !errors.Is(r.err, registry.ErrExists):
			t.Errorf("ClaimKey: %v", r.err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d claims won, want exactly 1", winners)
	}
	for _, r := range results {
		if r.bound != winner {
			t.Errorf("a claimer saw %q bound, want %q", r.bound, winner)
		}
	}
}

func TestReleaseKeyOnlyWhenBoundToID(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	a, b, c := messages.NewSessionID(), messages.NewSessionID(), messages.NewSessionID()
	if _, err := reg.ClaimKey(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	// A late release by a session that lost the key must not free it.
	if err := reg.ReleaseKey(ctx, "k", b); err != nil {
		t.Fatal(err)
	}
	if bound, err := reg.ClaimKey(ctx, "k", c); !errors.Is(err, registry.ErrExists) || bound != a {
		t.Fatalf("after a foreign release, ClaimKey = %q, %v; want %q, ErrExists", bound, err, a)
	}
	if err := reg.ReleaseKey(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	if bound, err := reg.ClaimKey(ctx, "k", c); err != nil || bound != c {
		t.Fatalf("after the owner's release, ClaimKey = %q, %v; want %q", bound, err, c)
	}
	if err := reg.ReleaseKey(ctx, "never-claimed", a); err != nil {
		t.Errorf("releasing an unbound key: %v", err)
	}
	if err := reg.ReleaseKey(ctx, "", a); err != nil {
		t.Errorf("releasing the empty key: %v", err)
	}
}

func TestKeysDoNotCollideWithSessions(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	s := session(messages.StatusReady)
	if _, err := reg.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	// A key equal to a session id, or to a bucket key, binds independently.
	for _, key := range []string{s.ID, "s." + s.ID, "k.x", "*", ">", "a b/c"} {
		other := messages.NewSessionID()
		if bound, err := reg.ClaimKey(ctx, key, other); err != nil || bound != other {
			t.Errorf("ClaimKey(%q) = %q, %v", key, bound, err)
		}
	}
	if got, err := reg.Get(ctx, s.ID); err != nil || got.Session.Status != messages.StatusReady {
		t.Errorf("the session record changed: %+v, %v", got, err)
	}
}
