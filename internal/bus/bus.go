// Package bus is Spawner's NATS plumbing: connecting with credentials and
// TLS, running the embedded server, and creating the streams and the bucket
// every component relies on.
package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds how to reach NATS and how to lay out Spawner's state on it.
type Config struct {
	// URL of an external NATS; empty runs the embedded server.
	URL string `envconfig:"NATS_URL" desc:"NATS to use; empty runs the embedded server (all-in-one only)"`
	// Listen is the embedded server's TCP address, so other services and the
	// nats CLI can reach it. Empty or "off" keeps the all-in-one's NATS
	// in-process only; "spawner nats" then listens on 127.0.0.1:4222. A
	// listening server requires credentials: the operator's, or role NKeys
	// it generates into the data dir.
	Listen string `envconfig:"NATS_LISTEN" desc:"the embedded server's client address; empty or off keeps the all-in-one's NATS in-process (spawner nats then uses 127.0.0.1:4222)"`
	// Layout holds the prefix of every subject, stream and bucket name.
	settings.Layout
	// Replication is the number of copies of streams and the bucket.
	settings.Replication
	// Memory keeps streams in memory instead of on disk (tests, benchmarks).
	Memory bool `envconfig:"NATS_MEMORY_STORAGE" desc:"keep streams and the registry in memory instead of on disk"`

	Creds    string `envconfig:"NATS_CREDS" desc:"NATS credentials file"`
	NKeyFile string `envconfig:"NATS_NKEY" desc:"NATS NKey seed file"`
	User     string `envconfig:"NATS_USER" desc:"NATS user name"`
	Password string `envconfig:"NATS_PASSWORD" desc:"NATS password"`
	TLSCA    string `envconfig:"NATS_TLS_CA" desc:"CA file that verifies the NATS server"`
	TLSCert  string `envconfig:"NATS_TLS_CERT" desc:"client certificate file for NATS"`
	TLSKey   string `envconfig:"NATS_TLS_KEY" desc:"client key file for NATS"`
	// ServerTLSCert and ServerTLSKey turn on TLS for the embedded server
	// ("spawner nats" and the all-in-one).
	ServerTLSCert string `envconfig:"NATS_SERVER_TLS_CERT" desc:"certificate file that turns on TLS for the embedded NATS server"`
	ServerTLSKey  string `envconfig:"NATS_SERVER_TLS_KEY" desc:"key file for the embedded NATS server's TLS"`
	// ClusterConfig makes "spawner nats" one server of a NATS cluster.
	ClusterConfig
	// LeafConfig makes "spawner nats" a hub of leaf nodes, or a leaf.
	LeafConfig
}

// Subjects returns the names for cfg's prefix and pool.
func (c Config) Subjects() (messages.Subjects, error) {
	return messages.NewPoolSubjects(c.Prefix, c.Pool)
}

// Connect dials NATS: the in-process server when srv is not nil, else cfg.URL.
// role is the NATS role the process connects as (see Permissions), which
// picks its private reply inbox; empty keeps the default inbox. It retries
// while the server is away, so that a restarted NATS is rejoined without
// restarting Spawner.
func Connect(cfg Config, role, name string, srv *server.Server, log *slog.Logger) (*nats.Conn, error) {
	return connect(cfg, role, name, srv, log, nil)
}

// connect is Connect with auth options that override cfg's, as the
// all-in-one's in-memory key does.
func connect(cfg Config, role, name string, srv *server.Server, log *slog.Logger, auth []nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(10 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", redact(nc.ConnectedUrl())) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	url := cfg.URL
	if srv != nil {
		opts = append(opts, nats.InProcessServer(srv))
		url = ""
	} else if url == "" {
		return nil, errors.New("connect nats: no URL and no embedded server")
	}
	if role != "" {
		subj, err := cfg.Subjects()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(subj, role)))
	}
	own, err := authOptions(cfg, auth == nil)
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, own...), auth...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redact(url), withoutURL(err))
	}
	return nc, nil
}

// authOptions turns cfg's credentials, when withCreds, and its TLS
// settings into options; the caller's own credentials replace cfg's.
func authOptions(cfg Config, withCreds bool) ([]nats.Option, error) {
	var opts []nats.Option
	if withCreds && cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if withCreds && cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey %s: %w", cfg.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if withCreds && cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.TLSCA != "" || cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("nats tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats tls ca %s: no certificate found", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("nats tls client cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// withoutURL drops the URL a parse error quotes, password and all.
func withoutURL(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}

// redact drops user info from a URL list so passwords never reach a log.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			if _, hasPassword := u.User.Password(); u.User != nil && !hasPassword {
				u.User = url.User("xxxxx") // A user without a password is a token.
			}
			parts[i] = u.Redacted()
		} else {
			parts[i] = "<unparsable url>"
		}
	}
	return strings.Join(parts, ",")
}

// Ensure creates or updates the heartbeat and event streams and the session
// bucket. Every component calls it at start, so any of them may come up first.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	subj, err := cfg.Subjects()
	if err != nil {
		return nil, err
	}
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	replicas := max(cfg.Replicas, 1)
	// A few heartbeats per session are enough: the reaper only needs the
	// newest, and the per-subject limit keeps the stream small at any scale.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              subj.HeartbeatStream(),
		Subjects:          []string{subj.Heartbeats()},
		Storage:           storage,
		Replicas:          replicas,
		MaxMsgsPerSubject: 3,
		MaxAge:            10 * time.Minute,
		Discard:           jetstream.DiscardOld,
		Duplicates:        time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", subj.HeartbeatStream(), err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     subj.EventStream(),
		Subjects: subj.EventSubjects(),
		Storage:  storage,
		Replicas: replicas,
		MaxAge:   24 * time.Hour,
		MaxMsgs:  1_000_000,
		MaxBytes: 512 << 20,
		Discard:  jetstream.DiscardOld,
		// Acknowledged, for the provisioner stores the events that end
		// sessions and waits for the stream to have them; a plain publish
		// asks for no acknowledgement and gets none. The message ids of
		// those events are deduplicated within two minutes.
		Duplicates: 2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", subj.EventStream(), err)
	}
	kv, err := sessionBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      subj.SessionBucket(),
		Description: "Spawner session records",
		History:     1,
		Storage:     storage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", subj.SessionBucket(), err)
	}
	return kv, nil
}
