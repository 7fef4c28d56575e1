package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterConfig joins "spawner nats" to a NATS cluster with JetStream.
// Routes carry every message and every JetStream replication between the
// servers, so they have their own user and password, which every server
// of the cluster shares; a server without them refuses to cluster.
type ClusterConfig struct {
	// ClusterListen is host:port for routes from the other servers; empty
	// runs a single server.
	ClusterListen string `envconfig:"NATS_CLUSTER_LISTEN" desc:"spawner nats: the address other servers of its NATS cluster connect to; empty runs one server alone"`
	// Routes are the nats-route:// URLs of the servers to join, this one
	// included or not; the route user and password are added to those
	// that carry none.
	Routes []string `envconfig:"NATS_ROUTES" desc:"spawner nats: the other servers of its cluster, as comma-separated nats-route:// URLs"`
	// ServerName is unique within the cluster; empty takes the host name
	// (a StatefulSet's pod name).
	ServerName string `envconfig:"NATS_SERVER_NAME" desc:"spawner nats: this server's unique name in its cluster (default: the host name)"`
	// ClusterName is the cluster's name, the same on every server.
	ClusterName string `envconfig:"NATS_CLUSTER_NAME" default:"spawner" desc:"spawner nats: the NATS cluster's name, the same on every server"`
	// ClusterUser and ClusterPassword authenticate the routes between the servers.
	ClusterUser     string `envconfig:"NATS_CLUSTER_USER" default:"route" desc:"spawner nats: the user cluster routes authenticate as"`
	ClusterPassword string `envconfig:"NATS_CLUSTER_PASSWORD" desc:"spawner nats: the password cluster routes authenticate with; required with a cluster"`
}

// Enabled reports whether this server is to join a cluster.
func (c ClusterConfig) Enabled() bool { return c.ClusterListen != "" && c.ClusterListen != "off" }

// apply sets the cluster options of a server.
func (c ClusterConfig) apply(opts *server.Options) error {
	if !c.Enabled() {
		return nil
	}
	if c.ClusterPassword == "" {
		return errors.New("a clustered NATS needs SPAWNER_NATS_CLUSTER_PASSWORD, the same on every server: " +
			"routes carry every message and are never open")
	}
	host, port, err := hostPort(c.ClusterListen)
	if err != nil {
		return fmt.Errorf("SPAWNER_NATS_CLUSTER_LISTEN: %w", err)
	}
	name := c.ServerName
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return fmt.Errorf("nats server name: %w (set SPAWNER_NATS_SERVER_NAME)", err)
		}
	}
	user := c.ClusterUser
	if user == "" {
		user = "route"
	}
	routes, err := routeURLs(c.Routes, user, c.ClusterPassword)
	if err != nil {
		return err
	}
	clusterName := c.ClusterName
	if clusterName == "" {
		clusterName = "spawner"
	}
	opts.ServerName = name
	opts.Cluster = server.ClusterOpts{Name: clusterName, Host: host, Port: port,
		Username: user, Password: c.ClusterPassword}
	opts.Routes = routes
	return nil
}

// routeURLs parses the route list, adding the route credentials to the
// URLs that carry none.
func routeURLs(list []string, user, password string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range list {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "nats-route" && u.Scheme != "nats") {
			return nil, fmt.Errorf("SPAWNER_NATS_ROUTES: %q is not a nats-route://host:port URL", redact(r))
		}
		if u.User == nil {
			u.User = url.UserPassword(user, password)
		}
		out = append(out, u)
	}
	return out, nil
}

func hostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	return host, port, nil
}
