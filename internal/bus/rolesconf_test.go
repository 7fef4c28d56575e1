package bus_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

const shippedConf = "../../deploy/nats/nats.conf"

// TestShippedNATSConfig checks that deploy/nats/nats.conf is the roles of
// this code, and that a real server runs it: a client spawns, cannot stop.
// Run with SPAWNER_UPDATE_NATS_CONF=1 to rewrite the file.
func TestShippedNATSConfig(t *testing.T) {
	subj, _ := messages.NewSubjects("spawner")
	want, err := bus.RolesConfig(subj)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SPAWNER_UPDATE_NATS_CONF") != "" {
		if err := os.WriteFile(shippedConf, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(shippedConf)
	if err != nil || string(got) != want {
		t.Fatalf("%s is not the roles of this code (%v); rerun with SPAWNER_UPDATE_NATS_CONF=1", shippedConf, err)
	}
	for _, role := range bus.Roles {
		t.Setenv("SPAWNER_NATS_"+strings.ToUpper(role)+"_PASSWORD", role+"-pw")
	}
	opts, err := server.ProcessConfigFile(shippedConf)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", shippedConf, err)
	}
	if len(opts.Users) != len(bus.Roles) {
		t.Fatalf("%s has %d users, want one per role", shippedConf, len(opts.Users))
	}
	for _, u := range opts.Users {
		want, _ := bus.Permissions(subj, u.Username)
		got := u.Permissions
		if !slices.Equal(got.Publish.Allow, want.Publish.Allow) || !slices.Equal(got.Subscribe.Allow, want.Subscribe.Allow) ||
			!slices.Equal(got.Subscribe.Deny, want.Subscribe.Deny) || (got.Response == nil) != (want.Response == nil) ||
			(got.Response != nil && *got.Response != *want.Response) {
			t.Errorf("%s: the server reads other permissions than the code's", u.Username)
		}
	}
	opts.Host, opts.Port, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, filepath.Join(t.TempDir(), "js"), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(patience) {
		t.Fatal("server not ready")
	}
	as := func(role string) *conn {
		c := &conn{errs: make(chan error, 10)}
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(role, role+"-pw"),
			nats.CustomInboxPrefix(bus.InboxPrefix(subj, role)),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { c.errs <- err }))
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		t.Cleanup(nc.Close)
		c.Conn = nc
		return c
	}
	prov := as(bus.RoleProvisioner)
	_, _ = prov.Subscribe(subj.Requested(), func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
	_ = prov.Flush()
	client := as(bus.RoleClient)
	if _, err := client.Request(subj.Requested(), nil, 5*time.Second); err != nil {
		t.Errorf("client spawn request: %v", err)
	}
	_ = client.Publish(subj.Stop(), nil)
	client.denied(t, subj.Stop())
	if _, err := nats.Connect(srv.ClientURL(), nats.UserInfo("client", "wrong")); err == nil {
		t.Error("a wrong password got in")
	}
}
