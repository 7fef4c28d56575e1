package registry_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// restartable is a NATS server whose store survives a restart, and a
// registry on a connection that rejoins it by itself.
type restartable struct {
	t      *testing.T
	dir    string
	listen string
	srv    *server.Server
	nc     *nats.Conn
	reg    *registry.Registry
}

func newRestartable(t *testing.T) *restartable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	r := &restartable{t: t, dir: t.TempDir(), listen: listen}
	r.start()
	t.Cleanup(func() { r.srv.Shutdown() })
	cfg, nc, js := connect(t, listen)
	kv, err := bus.Ensure(testContext(t), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.reg, r.nc = registry.New(kv), nc
	return r
}

// connect joins the server at listen with a connection that rejoins it
// by itself after a restart, as the components' connections do.
func connect(t *testing.T, listen string) (bus.Config, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	cfg := bus.Config{URL: "nats://" + listen, Layout: settings.Layout{Prefix: messages.DefaultPrefix}, Replication: settings.Replication{Replicas: 1}}
	nc, err := bus.Connect(cfg, "", t.Name(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, nc, js
}

func (r *restartable) start() {
	srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: r.listen, StoreDir: r.dir})
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = srv
}

// recorder collects what a cache handler is told.
type recorder struct {
	mu      sync.Mutex
	live    map[string]bool
	deleted map[string]int
	syncs   int
}

func (rc *recorder) handle(c registry.Change) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case c.Synced:
		rc.syncs++
	case c.Deleted:
		delete(rc.live, c.ID)
		rc.deleted[c.ID]++
	default:
		rc.live[c.ID] = true
	}
}

func (rc *recorder) state() (live map[string]bool, syncs int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	live = map[string]bool{}
	for id := range rc.live {
		live[id] = true
	}
	return live, rc.syncs
}

func runCache(t *testing.T, reg *registry.Registry, nc *nats.Conn) *registry.Cache {
	t.Helper()
	c := registry.NewCache(reg, nc, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCacheGetListAndSynced(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	a := session(messages.StatusReady)
	if _, err := reg.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	c := runCache(t, reg, nil)
	select {
	case <-c.Synced():
	case <-time.After(patience):
		t.Fatal("cache never synced")
	}
	if got, ok := c.Get(a.ID); !ok || got.ID != a.ID || got.Status != messages.StatusReady {
		t.Errorf("Get(%s) = %+v, %v", a.ID, got, ok)
	}
	// A handler added after the sync first gets what the cache holds.
	rc := &recorder{live: map[string]bool{}, deleted: map[string]int{}}
	c.OnChange(rc.handle)
	if live, syncs := rc.state(); !live[a.ID] || syncs != 1 {
		t.Errorf("late handler saw %v and %d syncs, want %s and 1", live, syncs, a.ID)
	}
	b := session(messages.StatusCreating)
	if _, err := reg.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, a.ID, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b cached and a gone", func() bool {
		_, hasA := c.Get(a.ID)
		_, hasB := c.Get(b.ID)
		return hasB && !hasA
	})
	list, synced := c.List()
	if !synced || len(list) != 1 || list[0].ID != b.ID {
		t.Errorf("List = %v, %v; want [%s], true", list, synced, b.ID)
	}
	if live, _ := rc.state(); len(live) != 1 || !live[b.ID] {
		t.Errorf("handler holds %v, want only %s", live, b.ID)
	}
}

// TestCacheResetAfterNATSRestart restarts the server on the same store
// and deletes records while the cache's connection is away: the cache and
// its handlers must drop them once the watch is back, and keep the rest.
func TestCacheResetAfterNATSRestart(t *testing.T) {
	r := newRestartable(t)
	ctx := testContext(t)
	var keep, gone []messages.Session
	for i := range 6 {
		s := session(messages.StatusReady)
		if _, err := r.reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			keep = append(keep, s)
		} else {
			gone = append(gone, s)
		}
	}
	c := runCache(t, r.reg, r.nc)
	rc := &recorder{live: map[string]bool{}, deleted: map[string]int{}}
	c.OnChange(rc.handle)
	eventually(t, "first sync", c.IsSynced)

	r.srv.Shutdown()
	r.srv.WaitForShutdown()
	r.start()
	// While the cache's watch is away, records end behind its back, and
	// their markers expire before it is back, as after a long partition.
	other, stream := otherRegistry(t, r.listen)
	for _, s := range gone {
		if err := other.Delete(ctx, s.ID, 0); err != nil {
			t.Fatal(err)
		}
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV.spawner_sessions.s."+s.ID)); err != nil {
			t.Fatal(err)
		}
	}
	added := session(messages.StatusReady)
	if _, err := other.Create(ctx, added); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	eventually(t, "the cache drops the records deleted while it was away and sees the new one", func() bool {
		for _, s := range gone {
			if _, ok := c.Get(s.ID); ok {
				return false
			}
		}
		_, ok := c.Get(added.ID)
		return ok && c.IsSynced()
	})
	// Its watch would resume by itself only after about 20 s; the
	// reconnect makes it replay at once.
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("the cache took %s to catch up after the restart", took)
	}
	for _, s := range keep {
		if _, ok := c.Get(s.ID); !ok {
			t.Errorf("kept record %s missing after the restart", s.ID)
		}
	}
	live, _ := rc.state()
	for _, s := range gone {
		if live[s.ID] {
			t.Errorf("handler still holds deleted %s", s.ID)
		}
	}
	if len(live) != len(keep)+1 {
		t.Errorf("handler holds %d records, want %d", len(live), len(keep)+1)
	}
}

func otherRegistry(t *testing.T, listen string) (*registry.Registry, jetstream.Stream) {
	t.Helper()
	_, _, js := connect(t, listen)
	kv, err := js.KeyValue(testContext(t), "spawner_sessions")
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(testContext(t), "KV_spawner_sessions")
	if err != nil {
		t.Fatal(err)
	}
	return registry.New(kv), stream
}

// What Await waited for has also reached the cache's handlers, so a
// view kept by one (the gateway's session list) shows it to a client that
// reads right after: the API's answer to a spawn waits on Await.
func TestCacheAwaitReturnsAfterTheHandlers(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	c := runCache(t, reg, nil)
	<-c.Synced()
	var mu sync.Mutex
	seen := map[string]bool{}
	c.OnChange(func(ch registry.Change) {
		time.Sleep(30 * time.Millisecond) // a slow handler widens the window
		mu.Lock()
		seen[ch.ID] = true
		mu.Unlock()
	})
	for range 3 {
		s := session(messages.StatusReady)
		if _, err := reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if !c.Await(ctx, s.ID, func(_ messages.Session, ok bool) bool { return ok }) {
			t.Fatal("Await never saw the record")
		}
		mu.Lock()
		handled := seen[s.ID]
		mu.Unlock()
		if !handled {
			t.Fatal("Await returned before the cache's handlers had the record")
		}
	}
}

// TestCacheAwait waits for a write the cache has not seen yet, for a
// delete, and gives up at its deadline on what never comes.
func TestCacheAwait(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	c := runCache(t, reg, nil)
	<-c.Synced()
	s := session(messages.StatusReady)
	got := make(chan bool, 1)
	go func() {
		got <- c.Await(ctx, s.ID, func(s messages.Session, ok bool) bool { return ok && s.Status == messages.StatusReady })
	}()
	select {
	case <-got:
		t.Fatal("Await returned before the record was written")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := reg.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("Await reported false for a record that came")
		}
	case <-time.After(patience):
		t.Fatal("Await never saw the record")
	}
	if err := reg.Delete(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if !c.Await(ctx, s.ID, func(_ messages.Session, ok bool) bool { return !ok }) {
		t.Fatal("Await never saw the delete")
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if c.Await(short, s.ID, func(_ messages.Session, ok bool) bool { return ok }) {
		t.Fatal("Await reported true for a record that is gone")
	}
	if waited := time.Since(start); waited < 90*time.Millisecond || waited > patience {
		t.Errorf("Await gave up after %v, want its 100ms deadline", waited)
	}
}
