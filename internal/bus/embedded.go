package bus

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process NATS server of the all-in-one mode.
type EmbeddedConfig struct {
	// Listen is host:port for clients, "" or "off" for in-process only, and
	// port -1 for a random port (tests).
	Listen string
	// StoreDir holds JetStream's files; empty keeps JetStream in memory only.
	StoreDir string
	// User and Password, when set, are required of every client.
	User, Password string
	// Nkeys are users that sign in with an NKey, each with its permissions.
	Nkeys []*server.NkeyUser
	// TLSCert and TLSKey, when set, make clients connect over TLS; with
	// TLSCA, clients must also present a certificate signed by it.
	TLSCert, TLSKey, TLSCA string
	// Cluster, when its Listen is set, joins this server to a cluster.
	Cluster ClusterConfig
	// Leaf makes this server a hub or a leaf node; Pool is the default of
	// a leaf's JetStream domain.
	Leaf LeafConfig
	Pool string
}

// EmbeddedFrom derives the embedded server's settings from the client
// settings, so the all-in-one's own components and outside clients use
// the same credentials.
func EmbeddedFrom(c Config, storeDir string) EmbeddedConfig {
	return EmbeddedConfig{Listen: c.Listen, StoreDir: storeDir, User: c.User, Password: c.Password,
		TLSCert: c.ServerTLSCert, TLSKey: c.ServerTLSKey, TLSCA: c.TLSCA, Cluster: c.ClusterConfig,
		Leaf: c.LeafConfig, Pool: c.Pool}
}

// readyWithin bounds the wait for an embedded server's listeners.
const readyWithin = 30 * time.Second

// RunEmbedded starts a nats-server with JetStream inside this process and
// waits until it accepts connections.
func RunEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	opts := &server.Options{
		ServerName:         "spawner-embedded",
		JetStream:          true,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         4 << 20,
		JetStreamMaxMemory: 1 << 30,
	}
	if cfg.StoreDir != "" {
		opts.StoreDir = filepath.Join(cfg.StoreDir, "jetstream")
	} else {
		opts.StoreDir = ""
	}
	if cfg.Listen == "" || cfg.Listen == "off" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
		}
		opts.Host, opts.Port = host, port
	}
	if len(cfg.Nkeys) > 0 {
		// A server takes a single user or a list, not both.
		opts.Nkeys = cfg.Nkeys
		if cfg.User != "" {
			opts.Users = []*server.User{{Username: cfg.User, Password: cfg.Password}}
		}
	} else {
		opts.Username, opts.Password = cfg.User, cfg.Password
	}
	if cfg.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey,
			CaFile: cfg.TLSCA, Verify: cfg.TLSCA != ""})
		if err != nil {
			return nil, fmt.Errorf("embedded nats tls: %w", err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = true, tc, cfg.TLSCA != "", 2
	}
	if err := cfg.Cluster.apply(opts); err != nil {
		return nil, err
	}
	if err := cfg.Leaf.apply(opts, cfg.Pool, cfg.Cluster.ServerName); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	// The server opens its listeners only after JetStream is up, which
	// took over 10 s for one of three clustered servers started at once
	// while the end-to-end suite ran on two cores.
	if !srv.ReadyForConnections(readyWithin) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready within %s (is %s in use?)", readyWithin, cfg.Listen)
	}
	return srv, nil
}
