package bus

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// LeafConfig joins "spawner nats" to other NATS servers as leaf nodes, the
// topology of pools in several places: each pool runs its own server (or
// cluster) with its own JetStream domain, connected to a hub, so a request
// for another pool crosses to it while each pool's streams and bucket stay
// on its own servers. Leaf connections carry every message between the
// hub and the pool, so they have their own user and password, which the
// hub and its leaves share; a hub without one accepts no leaf.
type LeafConfig struct {
	// LeafListen is host:port for leaf connections from pools; set on hubs.
	LeafListen string `envconfig:"NATS_LEAF_LISTEN" desc:"spawner nats: the address the leaf nodes of other pools connect to (a hub); empty accepts none"`
	// LeafRemotes are the nats-leaf:// URLs of the hub to join as a leaf;
	// the leaf user and password are added to those that carry none.
	LeafRemotes []string `envconfig:"NATS_LEAF_REMOTES" desc:"spawner nats: the hub to join as a leaf node, as comma-separated nats-leaf:// URLs of its servers"`
	// LeafUser and LeafPassword authenticate leaf connections.
	LeafUser     string `envconfig:"NATS_LEAF_USER" default:"leaf" desc:"spawner nats: the user leaf connections authenticate as"`
	LeafPassword string `envconfig:"NATS_LEAF_PASSWORD" desc:"spawner nats: the password leaf connections authenticate with; required on a hub and on its leaves"`
	// JetStreamDomain keeps this server's streams and bucket to itself
	// and its cluster: clients reach the local domain unless they name
	// another. A leaf needs one of its own; it defaults to the pool.
	JetStreamDomain string `envconfig:"NATS_JETSTREAM_DOMAIN" desc:"spawner nats: this server's JetStream domain (default: the pool's name on a leaf node, none elsewhere)"`
}

// leafEnabled reports whether this server accepts or makes leaf connections.
func (c LeafConfig) leafEnabled() bool {
	return (c.LeafListen != "" && c.LeafListen != "off") || len(nonEmpty(c.LeafRemotes)) > 0
}

// domain is the JetStream domain this server takes for pool.
func (c LeafConfig) domain(pool string) (string, error) {
	d := c.JetStreamDomain
	if d == "" && len(nonEmpty(c.LeafRemotes)) > 0 {
		d = pool
		if d == "" {
			return "", errors.New("a leaf node needs a JetStream domain of its own: set SPAWNER_POOL or SPAWNER_NATS_JETSTREAM_DOMAIN")
		}
	}
	if strings.ContainsAny(d, ". *>\t") {
		return "", fmt.Errorf("SPAWNER_NATS_JETSTREAM_DOMAIN %q: want one token, no dots, spaces or wildcards", d)
	}
	return d, nil
}

// apply sets the leaf node options and the JetStream domain of a server.
func (c LeafConfig) apply(opts *server.Options, pool, serverName string) error {
	domain, err := c.domain(pool)
	if err != nil {
		return err
	}
	opts.JetStreamDomain = domain
	if !c.leafEnabled() {
		return nil
	}
	if c.LeafPassword == "" {
		return errors.New("leaf nodes need SPAWNER_NATS_LEAF_PASSWORD, the same on the hub and its leaves: " +
			"leaf connections carry every message and are never open")
	}
	user := c.LeafUser
	if user == "" {
		user = "leaf"
	}
	// Servers joined by leaf connections, JetStream and all, need names
	// that tell them apart; the cluster settings may already have set one.
	if opts.ServerName == "" || opts.ServerName == "spawner-embedded" {
		if serverName == "" {
			if serverName, err = os.Hostname(); err != nil {
				return fmt.Errorf("nats server name: %w (set SPAWNER_NATS_SERVER_NAME)", err)
			}
		}
		opts.ServerName = serverName
	}
	if c.LeafListen != "" && c.LeafListen != "off" {
		host, port, err := hostPort(c.LeafListen)
		if err != nil {
			return fmt.Errorf("SPAWNER_NATS_LEAF_LISTEN: %w", err)
		}
		opts.LeafNode.Host, opts.LeafNode.Port = host, port
		opts.LeafNode.Username, opts.LeafNode.Password = user, c.LeafPassword
	}
	for _, r := range nonEmpty(c.LeafRemotes) {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "nats-leaf" && u.Scheme != "nats") {
			return fmt.Errorf("SPAWNER_NATS_LEAF_REMOTES: %q is not a nats-leaf://host:port URL", redact(r))
		}
		if u.User == nil {
			u.User = url.UserPassword(user, c.LeafPassword)
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{URLs: []*url.URL{u}})
	}
	return nil
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
