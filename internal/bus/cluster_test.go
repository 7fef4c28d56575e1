package bus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/settings"
)

// freePorts returns n ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer l.Close()
	}
	return ports
}

// startCluster runs three clustered servers as "spawner nats" does, each
// with its own data dir holding the same role keys.
func startCluster(t *testing.T) ([]*Embedded, Config) {
	t.Helper()
	ports := freePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	// The first server generates the keys; the others get copies, as an
	// operator copies them (or mounts one secret) onto every node.
	if _, err := ensureCredentials(CredentialsDir(dirs[0]), Roles); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs[1:] {
		if err := os.MkdirAll(CredentialsDir(d), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, role := range Roles {
			seed, err := os.ReadFile(CredentialsFile(dirs[0], role))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(CredentialsFile(d, role), seed, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	log := slog.New(slog.DiscardHandler)
	servers := make([]*Embedded, 3)
	errs := make(chan error, 3)
	for i := range 3 {
		c := Config{Layout: settings.Layout{Prefix: "spawner"}, Replication: settings.Replication{Replicas: 3}, Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
			ClusterConfig: ClusterConfig{ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[3+i]), Routes: routes,
				ServerName: fmt.Sprintf("n%d", i), ClusterName: "spawner", ClusterUser: "route", ClusterPassword: "route-secret"}}
		go func() {
			e, err := StartEmbedded(c, dirs[i], true, log)
			servers[i] = e
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range servers {
			if s != nil && s.Server.Running() {
				s.Shutdown()
			}
		}
	})
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.Server.ClientURL())
	}
	cfg := Config{URL: strings.Join(urls, ","), Layout: settings.Layout{Prefix: "spawner"}, Replication: settings.Replication{Replicas: 3}}
	return servers, cfg.ForRole(RoleProvisioner, dirs[0])
}

func TestClusterR3SurvivesAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-server cluster")
	}
	servers, cfg := startCluster(t)
	nc, err := Connect(cfg, RoleProvisioner, "test", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var kv jetstream.KeyValue
	start := time.Now()
	// The meta group needs a leader before streams can be made.
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err = Ensure(actx, js, cfg)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ensure on a fresh cluster: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("streams and bucket ensured on a fresh cluster in %v", time.Since(start))
	subj, _ := cfg.Subjects()
	for _, name := range []string{subj.HeartbeatStream(), subj.EventStream(), "KV_" + subj.SessionBucket()} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: replicas %d, cluster %+v; want R3 over three servers", name, info.Config.Replicas, info.Cluster)
		}
	}
	if _, err := kv.Put(ctx, "before", []byte("1")); err != nil {
		t.Fatal(err)
	}

	// Kill the server that leads the bucket's stream: the hardest case.
	s, _ := js.Stream(ctx, "KV_"+subj.SessionBucket())
	info, _ := s.Info(ctx)
	leader := info.Cluster.Leader
	killed := -1
	for i, e := range servers {
		if e.Server.Name() == leader {
			killed = i
			e.Server.Shutdown()
			e.Server.WaitForShutdown()
		}
	}
	if killed < 0 {
		t.Fatalf("no server named %q leads the bucket", leader)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Each try gets its own time: a publish whose ack died with the
		// leader would otherwise wait out the whole test's context.
		actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, perr := kv.Put(actx, "after", []byte("2"))
		e, gerr := kv.Get(actx, "before")
		acancel()
		if perr == nil && gerr == nil && string(e.Value()) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket with one of three servers down: put %v, get %v", perr, gerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	e, err := kv.Get(rctx, "after")
	if err != nil || string(e.Value()) != "2" {
		t.Fatalf("read back after failover: %v", err)
	}
	info, err = s.Info(rctx)
	if err != nil || info.Cluster.Leader == leader || info.Cluster.Leader == "" {
		t.Fatalf("bucket leader after killing %s: %+v, %v", leader, info.Cluster, err)
	}
	if !nc.IsConnected() {
		t.Fatalf("client not connected: %v", nc.Status())
	}
}

func TestClusterNeedsRoutePassword(t *testing.T) {
	c := Config{Layout: settings.Layout{Prefix: "spawner"}, Listen: "127.0.0.1:-1", ClusterConfig: ClusterConfig{ClusterListen: "127.0.0.1:-1", ServerName: "a"}}
	_, err := StartEmbedded(c, t.TempDir(), true, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "SPAWNER_NATS_CLUSTER_PASSWORD") {
		t.Fatalf("a cluster without a route password: %v", err)
	}
	for _, bad := range []string{"http://a:1", "nats-route://", "::"} {
		if _, err := routeURLs([]string{bad}, "u", "p"); err == nil {
			t.Errorf("route %q accepted", bad)
		}
	}
	got, err := routeURLs([]string{" nats-route://x:6222 ", "nats-route://me:own@y:6222", ""}, "route", "pw")
	if err != nil || len(got) != 2 || got[0].String() != "nats-route://route:pw@x:6222" || got[1].User.Username() != "me" {
		t.Fatalf("routes = %v, %v", got, err)
	}
}
