package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/sessiontoken"
	"github.com/spawnerhq/spawner/prober"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/docker"
	"github.com/spawnerhq/spawner/provisioner/kube"
	"github.com/spawnerhq/spawner/provisioner/process"
	"github.com/spawnerhq/spawner/reaper"
)

// Mode selects which components a process runs.
type Mode string

// The modes of the spawner binary that run components.
const (
	ModeAll         Mode = "all"
	ModeGateway     Mode = "gateway"
	ModeProvisioner Mode = "provisioner"
	ModeProber      Mode = "prober"
	ModeReaper      Mode = "reaper"
)

// Main is one Spawner process. Tests build it like the binary does and
// read its addresses once Started is closed.
type Main struct {
	Config Config
	Log    *slog.Logger
	// DemoCommand is the app command used when none is configured.
	DemoCommand string

	started     chan struct{}
	waitFor     []<-chan struct{}
	httpAddr    string
	metricsAddr string
	natsURL     string

	// reload guards the components a catalog reload reaches.
	reload      sync.Mutex
	gateway     *gateway.Gateway
	provisioner *provisioner.Provisioner
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{Config: cfg, Log: log, started: make(chan struct{})}
}

// Started is closed once every component is running.
func (m *Main) Started() <-chan struct{} { return m.started }

// HTTPAddr is the gateway's listening address, once started.
func (m *Main) HTTPAddr() string { return m.httpAddr }

// NATSURL is the URL of the NATS server in use, once started; empty when
// the embedded server takes no network clients.
func (m *Main) NATSURL() string { return m.natsURL }

// NATSConfig is how another process connects to this Spawner's NATS as
// role, once started: its URL and the role's generated credentials.
func (m *Main) NATSConfig(role string) bus.Config {
	c := m.Config.Bus
	c.URL = m.natsURL
	return c.ForRole(role, m.Config.Common.DataDir)
}

// Run runs mode's components until ctx is done, then shuts them down and
// closes NATS last, because stopping sessions still needs it. m.Config is
// only read: what the settings do not hold (collectors, the catalog, the
// token signer) goes to each component as a dependency.
func (m *Main) Run(ctx context.Context, mode Mode) error {
	cfg := m.Config
	cat, err := m.catalog()
	if err != nil {
		return err
	}
	// One set of collectors for every component, so one /metrics shows all.
	deps := shared{metrics: metrics.New(), catalog: cat}
	deps.metrics.SetPool(cfg.Bus.Pool)
	var nc *nats.Conn
	if (mode == ModeAll && cfg.Bus.URL == "") || cfg.Common.SessionAuth == "token" {
		if err := privateDir(cfg.Common.DataDir, m.Log); err != nil {
			return err
		}
	}
	if mode == ModeAll || mode == ModeGateway || mode == ModeProvisioner {
		if deps.signer, err = m.sessionSigner(); err != nil {
			return err
		}
	}
	if mode == ModeAll && cfg.Bus.URL == "" {
		emb, err := bus.StartEmbedded(cfg.Bus, cfg.Common.DataDir, false, m.Log)
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		if emb.Server.Addr() != nil {
			m.natsURL = emb.Server.ClientURL()
			m.Log.Info("embedded nats listening", "url", m.natsURL,
				"credentials", bus.CredentialsDir(cfg.Common.DataDir))
		}
		if nc, err = emb.Connect(cfg.Bus, "spawner-"+string(mode), m.Log); err != nil {
			return err
		}
	} else {
		m.natsURL = cfg.Bus.URL
		var err error
		role := string(mode)
		if mode == ModeAll {
			role = bus.RoleAll
		}
		if nc, err = bus.Connect(cfg.Bus.ForRole(role, cfg.Common.DataDir), role, "spawner-"+string(mode), nil, m.Log); err != nil {
			return err
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	kv, err := ensure(ctx, js, cfg.Bus, m.Log)
	if err != nil {
		return err
	}
	deps.nc, deps.reg = nc, registry.New(kv)

	var g run.Group
	if mode != ModeProvisioner {
		// One copy of the registry per process, not one per component: at
		// 10,000 sessions the all-in-one held four, and a copy costs about
		// 1 KB a session (BENCHMARKS.md, the prober at 10,000 sessions).
		deps.cache = registry.NewCache(deps.reg, nc, m.Log.With("component", "registry"))
		addActor(ctx, &g, deps.cache.Run)
	}
	if err := m.addMetrics(ctx, &g, mode, deps.metrics, deps.cache); err != nil {
		return err
	}
	if mode == ModeAll || mode == ModeGateway {
		if err := m.addGateway(ctx, &g, deps); err != nil {
			return err
		}
	}
	if mode == ModeAll || mode == ModeProvisioner {
		if err := m.addProvisioner(&g, deps); err != nil {
			return err
		}
	}
	if mode == ModeAll || mode == ModeProber {
		p, err := prober.New(cfg.Prober, prober.Deps{NATS: nc, Registry: deps.reg, Now: time.Now, Log: m.Log, Metrics: deps.metrics, Cache: deps.cache})
		if err != nil {
			return err
		}
		addActor(ctx, &g, p.Run)
	}
	if mode == ModeAll || mode == ModeReaper {
		r, err := reaper.New(cfg.Reaper, reaper.Deps{JetStream: js, NATS: nc, Registry: deps.reg, Now: time.Now, Log: m.Log, Metrics: deps.metrics, Cache: deps.cache})
		if err != nil {
			return err
		}
		addActor(ctx, &g, r.Run)
	}
	addActor(ctx, &g, func(ctx context.Context) error {
		// Started means requests are served, so wait for the provisioner
		// to subscribe: a spawn sent before that finds no responder.
		for _, ready := range m.waitFor {
			select {
			case <-ready:
			case <-ctx.Done():
				return nil
			}
		}
		close(m.started)
		<-ctx.Done()
		return nil
	})
	err = g.Run()
	if dErr := nc.Drain(); dErr != nil && !errors.Is(dErr, nats.ErrConnectionClosed) {
		m.Log.Warn("nats drain", "err", dErr)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// ensure retries while NATS is not there yet, as in a compose stack that
// starts every service at once.
func ensure(ctx context.Context, js jetstream.JetStream, cfg bus.Config, log *slog.Logger) (jetstream.KeyValue, error) {
	for attempt := 0; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := bus.Ensure(attemptCtx, js, cfg)
		cancel()
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil || attempt == 60 {
			return nil, err
		}
		log.Warn("waiting for jetstream", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// addActor adds a component whose Run returns when its context ends.
func addActor(parent context.Context, g *run.Group, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(parent)
	g.Add(func() error {
		if err := fn(ctx); err != nil {
			return err
		}
		return context.Canceled // Ending normally still ends the group.
	}, func(error) { cancel() })
}

func (m *Main) addGateway(ctx context.Context, g *run.Group, deps shared) error {
	cfg := m.Config.Gateway
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", cfg.HTTPAddr, err)
	}
	m.httpAddr = ln.Addr().String()
	cat := deps.catalog
	if cat == nil {
		// Without SPAWNER_APPS, GET /apps lists the one app the settings define.
		cat = catalog.Single(m.Config.Provisioner.WarmPool)
	}
	gd := gateway.Deps{NATS: deps.nc, Registry: deps.reg, Log: m.Log, Metrics: deps.metrics, Catalog: cat, Cache: deps.cache}
	if deps.signer != nil {
		gd.SessionTokens = deps.signer
	}
	gw, err := gateway.New(cfg, gd)
	if err != nil {
		ln.Close()
		return err
	}
	m.reload.Lock()
	m.gateway = gw
	m.reload.Unlock()
	addActor(ctx, g, func(ctx context.Context) error { return gw.Serve(ctx, ln) })
	// Started promises a gateway that serves: /readyz says 200 only once
	// the registry is loaded.
	m.waitFor = append(m.waitFor, gw.Ready())
	return nil
}

func (m *Main) addProvisioner(g *run.Group, deps shared) error {
	cfg := m.Config.Provisioner
	backend, err := m.backend(cfg.Backend)
	if err != nil {
		return err
	}
	if pb, ok := backend.(*process.Backend); ok {
		if err := m.checkIsolation(pb.Isolation()); err != nil {
			return err
		}
	}
	pd := provisioner.Deps{NATS: deps.nc, Registry: deps.reg, Backend: backend, Now: time.Now, Log: m.Log,
		Metrics: deps.metrics, Catalog: deps.catalog, GatewayURL: m.gatewayURL()}
	if deps.signer != nil {
		pd.Tokens = deps.signer
	}
	p, err := provisioner.New(cfg, pd)
	if err != nil {
		return err
	}
	m.reload.Lock()
	m.provisioner = p
	m.reload.Unlock()
	addActor(context.Background(), g, p.Run)
	m.waitFor = append(m.waitFor, p.Ready())
	return nil
}

func (m *Main) backend(name string) (provisioner.Backend, error) {
	switch name {
	case "process":
		return process.New(m.Config.Process, m.demoCommand(), localSidecar, m.Log)
	case "docker":
		return docker.New(m.Config.Docker, m.Log)
	case "kubernetes":
		return kube.New(m.Config.Kube, m.Log)
	default:
		return nil, fmt.Errorf("backend %q: want process, docker or kubernetes", name)
	}
}

func (m *Main) demoCommand() string {
	if m.DemoCommand != "" {
		return m.DemoCommand
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return DefaultDemoCommand(exe)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sessionSigner returns the session token signer when session auth is on.
func (m *Main) sessionSigner() (*sessiontoken.Signer, error) {
	switch m.Config.Common.SessionAuth {
	case "", "none":
		return nil, nil
	case "token":
		secret, err := sessiontoken.LoadSecret(m.Config.Common.SessionSecret, m.Config.Common.DataDir)
		if err != nil {
			return nil, err
		}
		return sessiontoken.New(secret)
	default:
		return nil, fmt.Errorf("SPAWNER_SESSION_AUTH %q: want none or token", m.Config.Common.SessionAuth)
	}
}

// checkIsolation refuses to run apps as Spawner's own user, where they
// could read its credentials, unless the operator said that is fine.
func (m *Main) checkIsolation(level string) error {
	if level != process.IsolationNone || m.Config.Process.Isolation == process.IsolationNone {
		return nil
	}
	var held []string
	if len(m.Config.Gateway.APITokens) > 0 {
		held = append(held, "API tokens")
	}
	if m.Config.Common.SessionAuth == "token" {
		held = append(held, "session tokens")
	}
	if b := m.Config.Bus; b.Creds != "" || b.NKeyFile != "" || b.User != "" || b.Password != "" {
		held = append(held, "NATS credentials")
	}
	if len(held) == 0 {
		return nil
	}
	return fmt.Errorf("the process backend cannot isolate apps here (it needs root), so every app could read "+
		"Spawner's %s; run Spawner as root, or set SPAWNER_PROCESS_ISOLATION=none to accept this", strings.Join(held, ", "))
}

// privateDir makes the data dir, which holds secrets, Spawner's alone.
func privateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		log.Warn("data dir was open to others; making it 0700", "dir", dir, "mode", info.Mode().Perm())
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}
