package settings

import "time"

// The settings that several components read are declared once, here, and
// embedded in each component's Config, so that their names, defaults and
// descriptions cannot drift apart.

// Layout is where Spawner's state lives on NATS; the NATS plumbing and
// every component read it.
type Layout struct {
	// Prefix starts every subject, stream and bucket name.
	Prefix string `envconfig:"PREFIX" default:"spawner" desc:"prefix of every subject, stream and bucket"`
	// Pool names this process's pool; it picks the pool's subjects,
	// streams and bucket (messages.NewPoolSubjects).
	Pool string `envconfig:"POOL" desc:"the pool this process belongs to, e.g. eu-1; empty is the default pool (see Placement)"`
}

// Sessions is how sessions are addressed and how long a spawn may take,
// on which the gateway and the provisioner must agree.
type Sessions struct {
	// PublicURL is the base of session URLs: <PublicURL>/p/<id>/. The
	// provisioner builds them; the gateway marks its cookies Secure when
	// it starts with https.
	PublicURL string `envconfig:"PUBLIC_URL" desc:"base of session URLs, e.g. https://example.com (default: from the listen address)"`
	// SpawnTimeout bounds a spawn: the provisioner's wait for the app and
	// the gateway's wait for the provisioner.
	SpawnTimeout time.Duration `envconfig:"SPAWN_TIMEOUT" default:"60s" desc:"a session not ready in this time fails"`
	// Routing is path, path-keep or subdomain (messages.Routing): how the
	// proxy finds a session, the shape of its URL and the base path its app
	// sees.
	Routing string `envconfig:"ROUTING" default:"path" desc:"how session URLs map onto apps: path, path-keep or subdomain"`
	// SessionDomain is the parent domain of session hosts under subdomain
	// routing: <id>.<SessionDomain>, with a port if browsers use one.
	SessionDomain string `envconfig:"SESSION_DOMAIN" desc:"parent domain of session hosts under subdomain routing"`
}

// Probing is how often session activity is gathered: the prober polls each
// session's /status, and the gateway reports the proxy's view, at this
// interval.
type Probing struct {
	ProbeInterval time.Duration `envconfig:"PROBE_INTERVAL" default:"5s" desc:"how often each session's activity is polled and the proxy's is reported"`
}

// Replication is how many copies NATS keeps of each stream and bucket,
// the NATS plumbing's and the prober's membership bucket's alike.
type Replication struct {
	// Replicas is 1 on a single server and 3 on a NATS cluster.
	Replicas int `envconfig:"NATS_REPLICAS" default:"1" desc:"stream and bucket replicas (3 on a NATS cluster)"`
}
