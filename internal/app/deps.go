package app

import (
	"net"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/sessiontoken"
)

// shared is what one process's components are built with besides their
// settings.
type shared struct {
	nc  *nats.Conn
	reg *registry.Registry
	// cache is the process's one registry copy, which the gateway, the
	// prober, the reaper and the session gauge share; nil where none of
	// them runs.
	cache   *registry.Cache
	metrics *metrics.Metrics
	// catalog is SPAWNER_APPS, nil without it.
	catalog *catalog.Catalog
	// signer is the session token signer, nil unless session auth is on.
	signer *sessiontoken.Signer
}

// gatewayURL is where browsers reach the gateway: SPAWNER_PUBLIC_URL, else
// the address the gateway in this process listens on, else its setting.
func (m *Main) gatewayURL() string {
	if m.Config.Gateway.PublicURL != "" {
		return m.Config.Gateway.PublicURL
	}
	if m.httpAddr != "" {
		return DefaultPublicURL(m.httpAddr)
	}
	return DefaultPublicURL(m.Config.Gateway.HTTPAddr)
}

// DefaultPublicURL turns a listening address into the URL browsers use.
func DefaultPublicURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
