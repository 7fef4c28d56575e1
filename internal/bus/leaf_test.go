package bus

import (
	"context"
	"fmt"
	"github.com/spawnerhq/spawner/internal/settings"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLeafNodesKeepJetStreamPerPool joins two pools' servers to a hub as
// leaf nodes, as "spawner nats" does with the leaf settings, and checks
// that core NATS requests cross to a pool while each pool's bucket stays
// on its own server, under the same name in both.
func TestLeafNodesKeepJetStreamPerPool(t *testing.T) {
	ports := freePorts(t, 4)
	log := slog.New(slog.DiscardHandler)
	start := func(c Config) *Embedded {
		t.Helper()
		e, err := StartEmbedded(c, t.TempDir(), true, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Shutdown)
		return e
	}
	leaf := LeafConfig{LeafPassword: "leaf-secret"}
	hubCfg := Config{Layout: settings.Layout{Prefix: "spawner"}, User: "u", Password: "p", Listen: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		ClusterConfig: ClusterConfig{ServerName: "hub"}, LeafConfig: leaf}
	hubCfg.LeafListen = fmt.Sprintf("127.0.0.1:%d", ports[1])
	hubCfg.JetStreamDomain = "hub"
	hub := start(hubCfg)
	pools := map[string]*Embedded{}
	for i, name := range []string{"a", "b"} {
		c := Config{Layout: settings.Layout{Prefix: "spawner", Pool: name}, User: "u", Password: "p", Listen: fmt.Sprintf("127.0.0.1:%d", ports[2+i]),
			ClusterConfig: ClusterConfig{ServerName: "leaf-" + name}, LeafConfig: leaf}
		c.LeafRemotes = []string{"nats-leaf://" + hubCfg.LeafListen}
		pools[name] = start(c)
	}
	conn := func(e *Embedded) *nats.Conn {
		nc, err := nats.Connect(e.Server.ClientURL(), nats.UserInfo("u", "p"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for name, e := range pools {
		if d := e.Server.JetStreamConfig().Domain; d != name {
			t.Errorf("pool %s's server has JetStream domain %q, want its pool", name, d)
		}
	}
	// A subscriber in pool b answers a request sent in pool a.
	bnc := conn(pools["b"])
	if _, err := bnc.Subscribe("spawner.pool.b.control.ping", func(m *nats.Msg) { _ = m.Respond([]byte("b")) }); err != nil {
		t.Fatal(err)
	}
	_ = bnc.Flush()
	anc := conn(pools["a"])
	var reply *nats.Msg
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if reply, err = anc.Request("spawner.pool.b.control.ping", nil, time.Second); err == nil {
			break
		}
	}
	if err != nil || string(reply.Data) != "b" {
		t.Fatalf("a request from pool a to pool b: %v", err)
	}
	// Nobody serves pool c: "no responders" comes at once, across the hub.
	began := time.Now()
	if _, err := anc.Request("spawner.pool.c.control.ping", nil, 5*time.Second); err != nats.ErrNoResponders || time.Since(began) > time.Second {
		t.Errorf("a request for a pool nobody serves: %v after %s, want no responders at once", err, time.Since(began))
	}
	// Each pool's bucket is its own: a key written in a is not in b.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, nc := range map[string]*nats.Conn{"a": anc, "b": bnc} {
		js, _ := jetstream.New(nc)
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "shared_name"})
		if err != nil {
			t.Fatalf("bucket in pool %s: %v", name, err)
		}
		if _, err := kv.Put(ctx, "owner", []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for name, nc := range map[string]*nats.Conn{"a": anc, "b": bnc, "hub": conn(hub)} {
		js, _ := jetstream.New(nc)
		kv, err := js.KeyValue(ctx, "shared_name")
		if name == "hub" {
			if err == nil {
				t.Error("the hub sees a pool's bucket in its own JetStream")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "owner")
		if err != nil || string(e.Value()) != name {
			t.Errorf("pool %s reads its bucket's owner as %v (%v)", name, e, err)
		}
	}
}

func TestLeafConfigNeedsPasswordAndDomain(t *testing.T) {
	for _, c := range []struct {
		cfg  LeafConfig
		pool string
		want string
	}{
		{LeafConfig{LeafListen: "127.0.0.1:7422"}, "", "SPAWNER_NATS_LEAF_PASSWORD"},
		{LeafConfig{LeafRemotes: []string{"nats-leaf://h:7422"}, LeafPassword: "x"}, "", "JetStream domain"},
		{LeafConfig{LeafRemotes: []string{"http://h:7422"}, LeafPassword: "x"}, "a", "nats-leaf://"},
		{LeafConfig{JetStreamDomain: "a.b"}, "", "one token"},
	} {
		err := c.cfg.apply(&server.Options{}, c.pool, "n")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v in pool %q: %v, want an error about %s", c.cfg, c.pool, err, c.want)
		}
	}
}
