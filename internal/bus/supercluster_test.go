package bus

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestSuperclusterQueueLocality checks what placement relies on in a
// supercluster: two clusters joined by a gateway connection, a provisioner
// stand-in in each serving the shared spawn subject in one queue group
// and its own pool's subject. A request naming no pool stays in the
// requester's cluster, one for the other pool crosses, and one for a pool
// whose last provisioner left gets "no responders" at once.
func TestSuperclusterQueueLocality(t *testing.T) {
	ports := freePorts(t, 2)
	names := []string{"east", "west"}
	servers := make([]*server.Server, 2)
	for i, name := range names {
		other := names[1-i]
		gwURL, _ := url.Parse(fmt.Sprintf("nats://127.0.0.1:%d", ports[1-i]))
		opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: -1},
			Gateway: server.GatewayOpts{Name: name, Host: "127.0.0.1", Port: ports[i],
				Gateways: []*server.RemoteGatewayOpts{{Name: other, URLs: []*url.URL{gwURL}}}}}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		t.Cleanup(srv.Shutdown)
		servers[i] = srv
	}
	conns := make([]*nats.Conn, 2)
	for i, srv := range servers {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		conns[i] = nc
	}
	subs := map[string]*nats.Subscription{}
	for i, name := range names {
		answer := func(m *nats.Msg) { _ = m.Respond([]byte(name)) }
		if _, err := conns[i].QueueSubscribe("spawner.session.requested", "provisioner", answer); err != nil {
			t.Fatal(err)
		}
		sub, err := conns[i].QueueSubscribe("spawner.pool."+name+".control.spawn", "provisioner", answer)
		if err != nil {
			t.Fatal(err)
		}
		subs[name] = sub
		_ = conns[i].Flush()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if servers[0].NumOutboundGateways() == 1 && servers[1].NumOutboundGateways() == 1 {
			if m, err := conns[0].Request("spawner.pool.west.control.spawn", nil, time.Second); err == nil && string(m.Data) == "west" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the clusters did not join")
		}
	}
	for i, name := range names {
		for range 20 {
			m, err := conns[i].Request("spawner.session.requested", nil, 2*time.Second)
			if err != nil || string(m.Data) != name {
				t.Fatalf("a request in %s naming no pool went to %v (%v)", name, m, err)
			}
		}
	}
	if err := subs["west"].Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	_ = conns[1].Flush()
	// Queue interest crosses gateways exactly, so the first request after
	// the unsubscription has travelled already finds nobody.
	for attempt, deadline := 0, time.Now().Add(5*time.Second); ; attempt++ {
		start := time.Now()
		_, err := conns[0].Request("spawner.pool.west.control.spawn", nil, 2*time.Second)
		if err == nats.ErrNoResponders && time.Since(start) < time.Second {
			t.Logf("no responders after %d earlier tries, in %s", attempt, time.Since(start))
			break
		}
		time.Sleep(50 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatalf("a request for a pool with no provisioner left: %v after %s, want no responders at once", err, time.Since(start))
		}
	}
}
