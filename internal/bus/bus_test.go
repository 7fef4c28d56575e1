package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

const patience = 20 * time.Second

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	t.Cleanup(cancel)
	return ctx
}

func TestRunEmbeddedListens(t *testing.T) {
	srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(testContext(t)); err != nil {
		t.Fatalf("JetStream is not enabled: %v", err)
	}
}

func TestRunEmbeddedInProcessOnly(t *testing.T) {
	for _, listen := range []string{"", "off"} {
		srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: listen})
		if err != nil {
			t.Fatalf("Listen %q: %v", listen, err)
		}
		if srv.Addr() != nil {
			t.Errorf("Listen %q opened %v", listen, srv.Addr())
		}
		nc, err := bus.Connect(bus.Config{}, "", "test", srv, discard())
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("x", nil); err != nil {
			t.Error(err)
		}
		if err := nc.Flush(); err != nil {
			t.Errorf("in-process connection: %v", err)
		}
		nc.Close()
		srv.Shutdown()
	}
}

func TestRunEmbeddedBadListen(t *testing.T) {
	for _, listen := range []string{"localhost", "127.0.0.1:http-ish", "::1:4222"} {
		if srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: listen}); err == nil {
			srv.Shutdown()
			t.Errorf("Listen %q accepted", listen)
		}
	}
}

func TestConnectNeedsAURL(t *testing.T) {
	if _, err := bus.Connect(bus.Config{}, "", "test", nil, discard()); err == nil {
		t.Fatal("Connect with no URL and no server succeeded")
	}
}

func TestConnectErrorsHideSecrets(t *testing.T) {
	for _, u := range []string{
		"nats://user:hunter2@127.0.0.1:notaport",
		"nats://user:hunter2@[::1",
		"nats://127.0.0.1:4222,nats://user:hunter2@host:y",
	} {
		_, err := bus.Connect(bus.Config{URL: u}, "", "test", nil, discard())
		if err == nil {
			t.Errorf("Connect(%q) succeeded", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Connect error shows the password: %v", err)
		}
	}
}

func TestConnectBadCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]bus.Config{
		"missing nkey":     {NKeyFile: filepath.Join(dir, "none.nk")},
		"missing CA":       {TLSCA: filepath.Join(dir, "none.pem")},
		"CA without certs": {TLSCA: notPEM},
		"missing cert":     {TLSCert: filepath.Join(dir, "none.crt"), TLSKey: filepath.Join(dir, "none.key")},
	} {
		cfg.URL = "nats://127.0.0.1:1"
		if nc, err := bus.Connect(cfg, "", "test", nil, discard()); err == nil {
			nc.Close()
			t.Errorf("%s: Connect succeeded", name)
		}
	}
}

func TestConnectWithUserAndPassword(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Username: "spawner", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(patience) {
		t.Fatal("server not ready")
	}
	nc, err := bus.Connect(bus.Config{URL: srv.ClientURL(), User: "spawner", Password: "s3cret"}, "", "test", nil, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("authenticated connection: %v", err)
	}
}

// TestReconnectLogHidesToken restarts a server that authenticates with a
// token in the URL and checks that the reconnect log does not show it.
func TestReconnectLogHidesToken(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Authorization: "tok3n-secret"}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(patience) {
		t.Fatal("server not ready")
	}
	port := srv.Addr().(*net.TCPAddr).Port
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	url := strings.Replace(srv.ClientURL(), "nats://", "nats://tok3n-secret@", 1)
	nc, err := bus.Connect(bus.Config{URL: url}, "", "test", nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	opts2 := *opts
	opts2.Port = port
	srv2, err := server.NewServer(&opts2)
	if err != nil {
		t.Fatal(err)
	}
	go srv2.Start()
	defer srv2.Shutdown()
	if !srv2.ReadyForConnections(patience) {
		t.Fatal("server not ready again")
	}
	deadline := time.Now().Add(patience)
	for !strings.Contains(logs.String(), "nats reconnected") {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "tok3n-secret") {
		t.Fatalf("the log shows the token:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEnsureIsIdempotent(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	if _, err := env.KV.Put(ctx, "s.keep", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Every component calls Ensure at start; later calls must keep data.
	kv, err := bus.Ensure(ctx, env.JS, env.Config)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	e, err := kv.Get(ctx, "s.keep")
	if err != nil || string(e.Value()) != "x" {
		t.Fatalf("after a second Ensure the bucket lost its data: %v", err)
	}
	subj, _ := env.Config.Subjects()
	for _, name := range []string{subj.HeartbeatStream(), subj.EventStream()} {
		if _, err := env.JS.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
}

// TestPoolsShareOneJetStream checks that named pools can keep their state
// in one JetStream, as on a supercluster: each gets its own streams and
// bucket, beside the default pool's, and a record of one is not in another.
func TestPoolsShareOneJetStream(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	for _, pool := range []string{"eu-1", "us-gpu"} {
		cfg := env.Config
		cfg.Pool = pool
		kv, err := bus.Ensure(ctx, env.JS, cfg)
		if err != nil {
			t.Fatalf("Ensure for pool %s beside the others: %v", pool, err)
		}
		if _, err := kv.Put(ctx, "s.owner", []byte(pool)); err != nil {
			t.Fatal(err)
		}
		subj, _ := cfg.Subjects()
		for _, name := range []string{subj.HeartbeatStream(), subj.EventStream()} {
			if _, err := env.JS.Stream(ctx, name); err != nil || !strings.Contains(name, pool) {
				t.Errorf("stream %s of pool %s: %v", name, pool, err)
			}
		}
	}
	if _, err := env.KV.Get(ctx, "s.owner"); err == nil {
		t.Error("a named pool's record is in the default pool's bucket")
	}
	if _, err := bus.Ensure(ctx, env.JS, env.Config); err != nil {
		t.Errorf("Ensure for the default pool after the named ones: %v", err)
	}
}

func TestEnsureRejectsBadPrefix(t *testing.T) {
	env := bustest.Run(t)
	cfg := env.Config
	cfg.Prefix = "bad.prefix"
	if _, err := bus.Ensure(testContext(t), env.JS, cfg); err == nil {
		t.Fatal("Ensure accepted a prefix with a dot")
	}
}

// TestRequestsAreNotCapturedByStreams checks that a spawn or stop request
// with no provisioner fails fast with no responders. A stream that captured
// the subject would answer it with a publish ack instead.
func TestRequestsAreNotCapturedByStreams(t *testing.T) {
	env := bustest.Run(t)
	subj, _ := env.Config.Subjects()
	for _, s := range []string{subj.Requested(), subj.Stop()} {
		_, err := env.Conn.Request(s, []byte(`{}`), patience)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("request on %s = %v, want no responders", s, err)
		}
	}
}

func TestEventStreamKeepsEvents(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	subj, _ := env.Config.Subjects()
	for _, et := range messages.EventTypes {
		if err := env.Conn.Publish(subj.Event(et), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := env.JS.Stream(ctx, subj.EventStream())
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(len(messages.EventTypes) - 1) // All but requested.
	deadline := time.Now().Add(patience)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == want {
			break
		}
		if info.State.Msgs > want || time.Now().After(deadline) {
			t.Fatalf("event stream holds %d messages, want %d", info.State.Msgs, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHeartbeatStreamKeepsFewPerSession(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	subj, _ := env.Config.Subjects()
	a, b := messages.NewSessionID(), messages.NewSessionID()
	for i := range 10 {
		if _, err := env.JS.Publish(ctx, subj.Heartbeat(a), []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.JS.Publish(ctx, subj.Heartbeat(b), []byte("b")); err != nil {
		t.Fatal(err)
	}
	s, err := env.JS.Stream(ctx, subj.HeartbeatStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj.Heartbeats()))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Subjects[subj.Heartbeat(a)] != 3 || info.State.Subjects[subj.Heartbeat(b)] != 1 {
		t.Errorf("per-session counts = %v, want 3 and 1", info.State.Subjects)
	}
	last, err := s.GetLastMsgForSubject(ctx, subj.Heartbeat(a))
	if err != nil || string(last.Data) != "9" {
		t.Errorf("newest heartbeat = %v, %v; want the last one published", last, err)
	}
}

func TestEnsureMemoryStorage(t *testing.T) {
	srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	cfg := bus.Config{Layout: settings.Layout{Prefix: "mem"}, Memory: true}
	nc, err := bus.Connect(cfg, "", "test", srv, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := testContext(t)
	kv, err := bus.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bucket() != "mem_sessions" {
		t.Errorf("bucket %q, want mem_sessions", st.Bucket())
	}
	s, err := js.Stream(ctx, "mem_heartbeats")
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.Storage != jetstream.MemoryStorage {
		t.Errorf("heartbeat stream storage = %v, want memory", s.CachedInfo().Config.Storage)
	}
}

// TestTwoInstallationsShareOneServer checks that different prefixes make
// separate streams and buckets on one NATS.
func TestTwoInstallationsShareOneServer(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	other := env.Config
	other.Prefix = "other"
	kv, err := bus.Ensure(ctx, env.JS, other)
	if err != nil {
		t.Fatalf("a second installation on one server: %v", err)
	}
	if _, err := kv.Put(ctx, "s.x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := env.KV.Get(ctx, "s.x"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("one installation sees the other's record: %v", err)
	}
}
