package provisioner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/internal/testlog"
	"github.com/spawnerhq/spawner/internal/testrun"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// patience bounds every wait; it is generous because -race on a loaded
// machine is slow, and a real hang is not rescued by any timeout.
const patience = 20 * time.Second

const backendName = "mem"

// memBackend keeps instances in a map. The tests are about the
// provisioner's logic, so the backend only records what it is asked to do,
// and, as the real backends do, reports the end of each instance it stops;
// startHook lets a test block or fail a start.
type memBackend struct {
	mu        sync.Mutex
	instances map[string]provisioner.Instance
	started   []string
	stopped   []string
	exits     chan<- provisioner.Exit
	done      <-chan struct{}
	running   chan struct{}
	startHook func(ctx context.Context, spec provisioner.Spec) error
	// local makes it a backend whose instances live beside their
	// provisioner, as the process backend's do; set before Run.
	local bool
}

func newMemBackend() *memBackend {
	return &memBackend{instances: map[string]provisioner.Instance{}, running: make(chan struct{})}
}

// Traits are a shared backend's, where the provisioner reconciles every
// record, unless local is set.
func (b *memBackend) Traits() provisioner.Traits { return provisioner.Traits{Local: b.local} }

func (b *memBackend) Run(ctx context.Context, exits chan<- provisioner.Exit) error {
	b.mu.Lock()
	b.exits, b.done = exits, ctx.Done()
	b.mu.Unlock()
	close(b.running)
	<-ctx.Done()
	return nil
}

func (b *memBackend) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Instance, error) {
	b.mu.Lock()
	b.started = append(b.started, spec.SessionID)
	hook := b.startHook
	b.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, spec); err != nil {
			return provisioner.Instance{}, err
		}
	}
	inst := provisioner.Instance{SessionID: spec.SessionID, Upstream: "10.0.0.1:" + spec.SessionID[:4],
		StatusURL: "http://10.0.0.1/status/" + spec.SessionID, Handle: "mem:" + spec.SessionID}
	b.mu.Lock()
	b.instances[spec.SessionID] = inst
	b.mu.Unlock()
	return inst, nil
}

func (b *memBackend) Stop(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = append(b.stopped, id)
	if _, ok := b.instances[id]; ok && b.exits != nil {
		exits, done := b.exits, b.done
		go func() {
			select {
			case exits <- provisioner.Exit{SessionID: id, Reason: messages.ReasonLost, Detail: "removed"}:
			case <-done:
			}
		}()
	}
	delete(b.instances, id)
	return nil
}

func (b *memBackend) List(context.Context) ([]provisioner.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]provisioner.Instance, 0, len(b.instances))
	for _, inst := range b.instances {
		out = append(out, inst)
	}
	return out, nil
}

func (b *memBackend) add(inst provisioner.Instance) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.instances[inst.SessionID] = inst
}

func (b *memBackend) has(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.instances[id]
	return ok
}

func (b *memBackend) starts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.started)
}

func (b *memBackend) stopsOf(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.stopped {
		if s == id {
			n++
		}
	}
	return n
}

func (b *memBackend) exit(e provisioner.Exit) {
	b.mu.Lock()
	exits := b.exits
	b.mu.Unlock()
	exits <- e
}

// harness is one provisioner on a real NATS, with a client connection of
// its own, as a gateway would have.
type harness struct {
	env     *bustest.Env
	client  *nats.Conn
	reg     *registry.Registry
	backend *memBackend
	prov    *provisioner.Provisioner
	cfg     provisioner.Config
	subj    messages.Subjects
	events  *eventLog
}

func testConfig() provisioner.Config {
	return provisioner.Config{
		Layout: settings.Layout{Prefix: messages.DefaultPrefix}, Backend: backendName, Name: "prov-test",
		Sessions:    settings.Sessions{PublicURL: "https://spawner.example/", SpawnTimeout: 10 * time.Second},
		Concurrency: 32, StopConcurrency: 8,
		IdleTimeout: 5 * time.Minute, Reconcile: time.Hour,
	}
}

// newHarness builds a provisioner for cfg on a memory backend; cat, when
// given, is its catalog.
func newHarness(t *testing.T, cfg provisioner.Config, cat ...*catalog.Catalog) *harness {
	t.Helper()
	env := bustest.Run(t)
	client, err := nats.Connect(env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	reg := registry.New(env.KV)
	backend := newMemBackend()
	log := testLogger(t)
	deps := provisioner.Deps{NATS: env.Conn, Registry: reg, Backend: backend, Log: log}
	if len(cat) > 0 {
		deps.Catalog = cat[0]
	}
	prov, err := provisioner.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := messages.NewPoolSubjects(cfg.Prefix, cfg.Pool)
	h := &harness{env: env, client: client, reg: reg, backend: backend, prov: prov, cfg: cfg, subj: subj}
	h.events = watchEvents(t, client, subj)
	return h
}

// run starts the provisioner and waits until it answers requests.
func (h *harness) run(t *testing.T) {
	t.Helper()
	testrun.Background(t, patience, h.prov.Run)
	<-h.backend.running
	select {
	case <-h.prov.Ready():
	case <-time.After(patience):
		t.Fatal("provisioner not taking requests")
	}
}

func (h *harness) spawn(t *testing.T, req messages.SpawnRequest) messages.SpawnReply {
	t.Helper()
	msg, err := h.client.Request(h.subj.Requested(), mustJSON(req), patience)
	if err != nil {
		t.Fatalf("spawn request: %v", err)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatalf("spawn reply %s: %v", msg.Data, err)
	}
	return rep
}

func (h *harness) stop(t *testing.T, id string, reason messages.Reason) messages.StopReply {
	t.Helper()
	msg, err := h.client.Request(h.subj.Stop(), mustJSON(messages.StopRequest{SessionID: id, Reason: reason, Detail: "test"}), patience)
	if err != nil {
		t.Fatalf("stop request: %v", err)
	}
	var rep messages.StopReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatalf("stop reply %s: %v", msg.Data, err)
	}
	return rep
}

func (h *harness) assertGone(t *testing.T, id string) {
	t.Helper()
	// The record goes right after the session's last event is stored.
	deadline := time.Now().Add(2 * time.Second)
	_, err := h.reg.Get(context.Background(), id)
	for err == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		_, err = h.reg.Get(context.Background(), id)
	}
	if !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("record of %s: %v, want it gone", id, err)
	}
	if h.backend.has(id) {
		t.Errorf("the backend still runs %s", id)
	}
}

// assertKeyFree checks that key can be claimed again, then frees it.
func (h *harness) assertKeyFree(t *testing.T, key string) {
	t.Helper()
	ctx := context.Background()
	probe := messages.NewSessionID()
	bound, err := h.reg.ClaimKey(ctx, key, probe)
	if err != nil {
		t.Errorf("key %q is still bound to %s: %v", key, bound, err)
		return
	}
	_ = h.reg.ReleaseKey(ctx, key, probe)
}

type event struct {
	subject string
	messages.Event
}

// eventLog collects lifecycle events in the order NATS delivered them.
type eventLog struct {
	mu     sync.Mutex
	events []event
	added  chan struct{}
}

func watchEvents(t *testing.T, nc *nats.Conn, subj messages.Subjects) *eventLog {
	t.Helper()
	l := &eventLog{added: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(subj.Sessions(), func(m *nats.Msg) {
		if m.Subject == subj.Requested() || m.Subject == subj.Stop() {
			return
		}
		var ev messages.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("undecodable event on %s: %s", m.Subject, m.Data)
			return
		}
		l.mu.Lock()
		l.events = append(l.events, event{subject: m.Subject, Event: ev})
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// of returns the events that match.
func (l *eventLog) of(match func(event) bool) []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []event
	for _, e := range l.events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first event that matches, waiting for it.
func (l *eventLog) wait(t *testing.T, what string, match func(event) bool) event {
	t.Helper()
	deadline := time.After(patience)
	for {
		if got := l.of(match); len(got) > 0 {
			return got[0]
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("no %s event; saw %v", what, l.types())
		}
	}
}

func (l *eventLog) types() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.events {
		fmt.Fprintf(&b, "%s(%s %s) ", e.Type, e.SessionID, e.Reason)
	}
	return b.String()
}

func is(t messages.EventType, id string) func(event) bool {
	return func(e event) bool { return e.Type == t && e.SessionID == id }
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t) }

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
