package bus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// standalone runs "spawner nats" on a random port with its data dir.
func standalone(t *testing.T) (bus.Config, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := bus.Config{Listen: "127.0.0.1:-1", Layout: settings.Layout{Prefix: "spawner"}, Replication: settings.Replication{Replicas: 1}}
	emb, err := bus.StartEmbedded(cfg, dir, true, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	cfg.URL = emb.Server.ClientURL()
	return cfg, dir
}

// conn is one role's connection and the permission errors it got.
type conn struct {
	*nats.Conn
	errs chan error
}

func connectAs(t *testing.T, cfg bus.Config, dir, role string) *conn {
	t.Helper()
	c := &conn{errs: make(chan error, 100)}
	rc := cfg.ForRole(role, dir)
	subj, _ := cfg.Subjects()
	opts := []nats.Option{nats.CustomInboxPrefix(bus.InboxPrefix(subj, role)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { c.errs <- err })}
	nk, err := nats.NkeyOptionFromSeed(rc.NKeyFile)
	if err != nil {
		t.Fatalf("%s credentials: %v", role, err)
	}
	nc, err := nats.Connect(cfg.URL, append(opts, nk)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

// denied waits for the server's permissions violation naming what.
func (c *conn) denied(t *testing.T, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), what) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %s", what)
		}
	}
}

func TestUnauthenticatedConnectionRefused(t *testing.T) {
	cfg, _ := standalone(t)
	nc, err := nats.Connect(cfg.URL)
	if err == nil {
		nc.Close()
		t.Fatal("a client without credentials got in")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("want an authorization violation, got %v", err)
	}
}

func TestCredentialFilesArePrivate(t *testing.T) {
	_, dir := standalone(t)
	st, err := os.Stat(bus.CredentialsDir(dir))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("credentials dir: %v, %v; want mode 0700", st.Mode(), err)
	}
	for _, role := range bus.Roles {
		st, err := os.Stat(bus.CredentialsFile(dir, role))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s credentials: %v; want mode 0600", role, err)
		}
	}
	if _, err := os.Stat(bus.CredentialsFile(dir, bus.RoleAll)); err == nil {
		t.Error("the all-powerful in-process key was written to disk")
	}
}

func TestClientRole(t *testing.T) {
	cfg, dir := standalone(t)
	subj, _ := cfg.Subjects()
	prov := connectAs(t, cfg, dir, bus.RoleProvisioner)
	if _, err := prov.Subscribe(subj.Requested(), func(m *nats.Msg) { _ = m.Respond([]byte(`{"session_id":"x"}`)) }); err != nil {
		t.Fatal(err)
	}
	_ = prov.Flush()
	gw := connectAs(t, cfg, dir, bus.RoleGateway)
	gwInbox, _ := gw.SubscribeSync(bus.InboxPrefix(subj, bus.RoleGateway) + ".>")
	_ = gw.Flush()

	client := connectAs(t, cfg, dir, bus.RoleClient)
	events, _ := client.SubscribeSync(subj.Sessions())
	_ = client.Flush()
	msg, err := client.Request(subj.Requested(), []byte(`{}`), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), "session_id") {
		t.Fatalf("client spawn request: %v", err)
	}
	if m, err := events.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("client saw a request on %s: other clients' requests carry their env", m.Subject)
	}
	if err := prov.Publish(subj.Event(messages.EventReady), []byte(`{"type":"ready"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := events.NextMsg(5 * time.Second); err != nil {
		t.Errorf("client reads no events: %v", err)
	}

	_, _ = client.SubscribeSync(">")
	client.denied(t, `Subscription to ">"`)
	_, _ = client.SubscribeSync("_INBOX.>")
	client.denied(t, `Subscription to "_INBOX.>"`)
	_, _ = client.SubscribeSync(bus.InboxPrefix(subj, bus.RoleGateway) + ".>")
	client.denied(t, "_INBOX_spawner_gateway")
	_ = client.Publish(subj.Stop(), []byte(`{}`))
	client.denied(t, subj.Stop())
	_ = client.Publish(subj.Heartbeat("x"), nil)
	client.denied(t, subj.Heartbeat("x"))
	js, _ := jetstream.New(client.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js.KeyValue(ctx, subj.SessionBucket()); err == nil {
		t.Error("client opened the session bucket")
	}
	client.denied(t, "$JS.API.STREAM.INFO.KV_spawner_sessions")
	if _, err := gwInbox.NextMsg(100 * time.Millisecond); err == nil {
		t.Error("the client's traffic reached the gateway's inbox")
	}
}

func TestOpsRole(t *testing.T) {
	cfg, dir := standalone(t)
	subj, _ := cfg.Subjects()
	gw := connectAs(t, cfg, dir, bus.RoleGateway)
	js, _ := jetstream.New(gw.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	kv, err := bus.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("gateway runs Ensure: %v", err)
	}
	if _, err := kv.Put(ctx, "s.one", []byte(`{"id":"one"}`)); err != nil {
		t.Fatal(err)
	}

	ops := connectAs(t, cfg, dir, bus.RoleOps)
	ojs, _ := jetstream.New(ops.Conn)
	okv, err := ojs.KeyValue(ctx, subj.SessionBucket())
	if err != nil {
		t.Fatalf("ops opens the bucket: %v", err)
	}
	if e, err := okv.Get(ctx, "s.one"); err != nil || string(e.Value()) != `{"id":"one"}` {
		t.Fatalf("ops reads a record: %v", err)
	}
	events, _ := ops.SubscribeSync(subj.Sessions())
	_ = ops.Flush()
	_ = gw.Publish(subj.Requested(), []byte(`{}`))
	if _, err := events.NextMsg(5 * time.Second); err != nil {
		t.Errorf("ops reads nothing on %s: %v", subj.Sessions(), err)
	}
	_ = ops.Publish(subj.Requested(), []byte(`{}`))
	ops.denied(t, subj.Requested())
	_ = ops.Publish(subj.Stop(), []byte(`{}`))
	ops.denied(t, subj.Stop())
	_ = ops.Publish("$KV.spawner_sessions.s.one", []byte(`{}`))
	ops.denied(t, "$KV.spawner_sessions.s.one")
}

// TestComponentRolesRunTheirCalls runs, as each component's role, the
// JetStream calls its component makes: Ensure, the registry, the reaper's
// durable consumer and the gateway's event replay.
func TestComponentRolesRunTheirCalls(t *testing.T) {
	cfg, dir := standalone(t)
	subj, _ := cfg.Subjects()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for _, role := range []string{bus.RoleGateway, bus.RoleProvisioner, bus.RoleProber, bus.RoleReaper} {
		nc, err := bus.Connect(cfg.ForRole(role, dir), role, role, nil, discard())
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		kv, err := bus.Ensure(ctx, js, cfg)
		if err != nil {
			t.Fatalf("%s: Ensure: %v", role, err)
		}
		if _, err := kv.Put(ctx, "s."+role, []byte("{}")); err != nil {
			t.Errorf("%s: put: %v", role, err)
		}
		if err := kv.Purge(ctx, "s."+role); err != nil {
			t.Errorf("%s: purge: %v", role, err)
		}
		w, err := kv.WatchFiltered(ctx, []string{"s.*"})
		if err != nil {
			t.Fatalf("%s: watch: %v", role, err)
		}
		if e := <-w.Updates(); e == nil {
			t.Errorf("%s: the watch delivered nothing", role)
		}
		_ = w.Stop()
		// A denied call gets no answer, so it waits out a short timeout.
		mctx, mcancel := context.WithTimeout(ctx, time.Second)
		members, merr := bus.EnsureMembers(mctx, js, subj, 1)
		mcancel()
		if role != bus.RoleProber {
			if merr == nil {
				short, cancelShort := context.WithTimeout(ctx, time.Second)
				_, merr = members.Put(short, "intruder", nil)
				cancelShort()
			}
			if merr == nil {
				t.Errorf("%s writes the probers' membership bucket", role)
			}
		}
		switch role {
		case bus.RoleProber:
			if merr != nil {
				t.Fatalf("prober: membership bucket: %v", merr)
			}
			if _, err := members.Put(ctx, "p1", nil); err != nil {
				t.Errorf("prober announces itself: %v", err)
			}
			w, err := members.WatchAll(ctx)
			if err != nil {
				t.Fatalf("prober watches the members: %v", err)
			}
			if e := <-w.Updates(); e == nil || e.Key() != "p1" {
				t.Errorf("prober's membership watch delivered %v", e)
			}
			_ = w.Stop()
			if err := members.Delete(ctx, "p1"); err != nil {
				t.Errorf("prober withdraws: %v", err)
			}
		case bus.RoleReaper:
			cons, err := js.CreateOrUpdateConsumer(ctx, subj.HeartbeatStream(), jetstream.ConsumerConfig{
				Durable: subj.ReaperConsumer(), FilterSubject: subj.Heartbeats(), AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatalf("reaper consumer: %v", err)
			}
			short, cancelShort := context.WithTimeout(ctx, time.Second)
			_, err = js.Publish(short, subj.Heartbeat("x"), []byte("{}"))
			cancelShort()
			if err == nil {
				t.Error("the reaper publishes heartbeats")
			}
			prober, _ := bus.Connect(cfg.ForRole(bus.RoleProber, dir), bus.RoleProber, "prober", nil, discard())
			if err := prober.Publish(subj.Heartbeat("x"), []byte("{}")); err != nil {
				t.Fatal(err)
			}
			_ = prober.Flush()
			prober.Close()
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range batch.Messages() {
				if err := m.Ack(); err != nil {
					t.Errorf("reaper acks a heartbeat: %v", err)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				info, err := cons.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.AckFloor.Stream == 1 && info.NumAckPending == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the reaper's ack did not land: %+v", info)
				}
			}
		case bus.RoleGateway:
			s, err := js.Stream(ctx, subj.EventStream())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subj.EventSubjects()}); err != nil {
				t.Errorf("gateway replays events: %v", err)
			}
		}
		nc.Close()
	}
}

func TestPermissionSets(t *testing.T) {
	subj, _ := messages.NewSubjects("spawner")
	for _, role := range append(bus.Roles, bus.RoleAll) {
		p, err := bus.Permissions(subj, role)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range append(p.Publish.Allow, p.Subscribe.Allow...) {
			if s == ">" || strings.HasPrefix(s, "_INBOX.") || s == "$JS.API.>" {
				t.Errorf("%s may use %q", role, s)
			}
		}
		if (p.Response != nil) != (role == bus.RoleProvisioner || role == bus.RoleAll) {
			t.Errorf("%s: allow_responses = %v; only the provisioner answers requests", role, p.Response != nil)
		}
	}
	if _, err := bus.Permissions(subj, "root"); err == nil {
		t.Error("an unknown role has permissions")
	}
}

func TestNATSFlags(t *testing.T) {
	dir := t.TempDir()
	if _, err := bus.NATSFlags(bus.Config{Layout: settings.Layout{Prefix: "spawner"}}, dir, bus.RoleClient); err == nil {
		t.Error("flags for an all-in-one that takes no network clients")
	}
	cfg := bus.Config{Layout: settings.Layout{Prefix: "spawner"}, Listen: "0.0.0.0:4222"}
	if _, err := bus.NATSFlags(cfg, dir, bus.RoleClient); err == nil {
		t.Error("flags before the credentials exist")
	}
	if _, err := bus.NATSFlags(cfg, dir, "root"); err == nil {
		t.Error("flags for an unknown role")
	}
	if err := os.MkdirAll(bus.CredentialsDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bus.CredentialsFile(dir, bus.RoleOps), []byte("seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags, err := bus.NATSFlags(cfg, dir, bus.RoleOps)
	want := "--server nats://127.0.0.1:4222 --nkey " + filepath.Join(dir, "nats", "ops.nk") + " --inbox-prefix _INBOX_spawner_ops"
	if err != nil || strings.Join(flags, " ") != want {
		t.Errorf("flags = %q, %v; want %q", flags, err, want)
	}
}
