// Package bustest runs a real, in-process NATS server with JetStream for tests.
package bustest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/settings"
)

// Env is one test's NATS: the server, a connection, JetStream and the
// session bucket, all created with the default prefix.
type Env struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
	KV     jetstream.KeyValue
	Config bus.Config
}

// Run starts a server on a random port with JetStream in t.TempDir and
// stops it when the test ends.
func Run(t testing.TB) *Env {
	t.Helper()
	srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg := bus.Config{URL: srv.ClientURL(), Layout: settings.Layout{Prefix: "spawner"}, Replication: settings.Replication{Replicas: 1}}
	nc, err := bus.Connect(cfg, "", "test", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := bus.Ensure(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Server: srv, Conn: nc, JS: js, KV: kv, Config: cfg}
}
