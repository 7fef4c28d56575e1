package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
)

// prepareNATSCluster gives each of n servers its client and route ports
// and a data dir (the first one's is the cluster's DataDir, where the role
// keys are written), and has every stream and bucket replicated three
// times.
func (c *faultCluster) prepareNATSCluster(t *testing.T, n int) {
	t.Helper()
	var urls, routes []string
	names := make([]string, n)
	for i := range n {
		names[i] = "nats-" + strconv.Itoa(i+1)
		s := faultServer{
			addr:  "127.0.0.1:" + strconv.Itoa(faultFreePort(t)),
			route: "nats-route://127.0.0.1:" + strconv.Itoa(faultFreePort(t)),
		}
		if s.dataDir = c.DataDir; i > 0 {
			s.dataDir = t.TempDir()
		}
		c.servers[names[i]] = s
		urls = append(urls, "nats://"+s.addr)
		routes = append(routes, s.route)
	}
	c.NATSURL = strings.Join(urls, ",")
	c.env = append(c.env, "SPAWNER_NATS_REPLICAS=3", "SPAWNER_NATS_ROUTES="+strings.Join(routes, ","),
		"SPAWNER_NATS_CLUSTER_PASSWORD=route-"+c.Tag)
}

// serverEnv is one cluster server's own settings.
func (c *faultCluster) serverEnv(name string, s faultServer) []string {
	return []string{"SPAWNER_DATA_DIR=" + s.dataDir, "SPAWNER_NATS_LISTEN=" + s.addr,
		"SPAWNER_NATS_SERVER_NAME=" + name, "SPAWNER_NATS_CLUSTER_LISTEN=" + strings.TrimPrefix(s.route, "nats-route://")}
}

// prepareServer copies the role keys the first server wrote into another
// server's data dir before its first start: every server of a cluster
// must accept the same keys.
func (c *faultCluster) prepareServer(name string) error {
	s, ok := c.servers[name]
	if !ok || s.dataDir == c.DataDir {
		return nil
	}
	if err := os.MkdirAll(bus.CredentialsDir(s.dataDir), 0o700); err != nil {
		return err
	}
	for _, role := range bus.Roles {
		seed, err := os.ReadFile(bus.CredentialsFile(c.DataDir, role))
		if err != nil {
			return fmt.Errorf("start %s: the first server's role keys: %w", name, err)
		}
		if err := os.WriteFile(bus.CredentialsFile(s.dataDir, role), seed, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ServerNames lists the cluster's servers, in order.
func (c *faultCluster) ServerNames() []string {
	var out []string
	for name := range c.servers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// ServerURL is the client URL of one server of the cluster.
func (c *faultCluster) ServerURL(name string) string { return "nats://" + c.servers[name].addr }

// MetaLeader returns the running server that last logged that it leads
// the JetStream meta group ("spawner nats" logs every change, and its
// state at start), or an error if none does.
func (c *faultCluster) MetaLeader() (string, error) {
	var leaders []string
	for _, name := range c.ServerNames() {
		c.mu.Lock()
		comp := c.procs[name]
		c.mu.Unlock()
		if comp == nil {
			continue
		}
		select {
		case <-comp.done:
			continue
		default:
		}
		lines := bytes.Split(c.logOf(comp), []byte("\n"))
		for j := len(lines) - 1; j >= 0; j-- {
			if bytes.Contains(lines[j], []byte("jetstream meta leader")) {
				if bytes.Contains(lines[j], []byte("leader=true")) {
					leaders = append(leaders, name)
				}
				break
			}
		}
	}
	if len(leaders) != 1 {
		return "", fmt.Errorf("servers that say they lead the JetStream meta group: %v", leaders)
	}
	return leaders[0], nil
}

// AwaitMetaLeader waits until exactly one server leads the meta group.
func (c *faultCluster) AwaitMetaLeader(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		leader, err := c.MetaLeader()
		if err == nil || time.Now().After(deadline) {
			return leader, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// StreamLeader returns the server that leads the stream's replicas.
func (c *faultCluster) StreamLeader(stream string) (string, error) {
	info, err := c.streamInfo(stream)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// AwaitStreamsCurrent waits until each stream has a leader and every other
// replica is online and caught up, so that the loss of any one server
// leaves a quorum. It returns how long that took.
func (c *faultCluster) AwaitStreamsCurrent(timeout time.Duration, streams ...string) (time.Duration, error) {
	began := time.Now()
	for {
		var err error
		for _, stream := range streams {
			if err = c.streamCurrent(stream); err != nil {
				break
			}
		}
		if err == nil {
			return time.Since(began), nil
		}
		if time.Since(began) > timeout {
			return time.Since(began), err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (c *faultCluster) streamCurrent(stream string) error {
	info, err := c.streamInfo(stream)
	if err != nil {
		return err
	}
	cl := info.Cluster
	if cl == nil || cl.Leader == "" || len(cl.Replicas) != len(c.servers)-1 {
		return fmt.Errorf("stream %s: replicas %+v", stream, cl)
	}
	for _, r := range cl.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("stream %s: replica %s is behind or offline", stream, r.Name)
		}
	}
	return nil
}

// streamInfo asks the cluster about a stream as the ops role, with a
// deadline of its own, on a connection of its own: a server just killed
// must not hold the answer up.
func (c *faultCluster) streamInfo(stream string) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(c.NATSURL, append(c.NATSOptions(bus.RoleOps), nats.Timeout(time.Second))...)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info == nil {
		return nil, errors.New("no stream info")
	}
	return info, nil
}
