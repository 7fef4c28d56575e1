// Package provisioner is Spawner's worker pool. Its replicas share the spawn
// and stop requests through NATS queue groups, start and stop instances
// through a Backend, and keep the session registry true to the backend.
package provisioner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the provisioner's settings.
type Config struct {
	settings.Layout
	// Sessions are the URL and spawn settings the gateway shares.
	settings.Sessions
	// PoolLabels describe the pool to placement: a request's placement
	// must match every one it names.
	PoolLabels string `envconfig:"POOL_LABELS" desc:"the labels of this provisioner's pool that requests place by, as key=value,key=value (e.g. region=eu,gpu=true)"`
	// Backend names the backend, recorded in every session.
	Backend string `envconfig:"BACKEND" default:"process" desc:"what a session runs as: process, docker or kubernetes"`
	// Name identifies this provisioner; it owns the sessions it starts. A
	// stable name lets a restarted provisioner adopt its old records.
	Name        string `envconfig:"PROVISIONER_NAME" desc:"owner of this provisioner's sessions (default: the host name); keep it stable across restarts"`
	Concurrency int    `envconfig:"SPAWN_CONCURRENCY" default:"64" desc:"spawns in flight per provisioner"`
	// StopConcurrency is how many stop requests a provisioner works on at
	// once. With 8, as it was, 1,000 sessions going idle together at
	// 30,000 live took 23 s to reap (BENCHMARKS.md, "Cost as sessions
	// grow"): each stop is a few registry round trips, slower on a busy
	// bucket, and the reaper's 64 requests queued behind 8 workers.
	StopConcurrency int           `envconfig:"STOP_CONCURRENCY" default:"64" desc:"stop requests in flight per provisioner"`
	IdleTimeout     time.Duration `envconfig:"IDLE_TIMEOUT" default:"5m" desc:"a session idle this long ends"`
	MaxLifetime     time.Duration `envconfig:"MAX_LIFETIME" default:"0" desc:"a session this old ends; 0 means no limit"`
	MaxSessions     int           `envconfig:"MAX_SESSIONS" default:"0" desc:"past this many live sessions /init gets 429; 0 means no limit"`
	// EnvAllow lists the env names and prefixes (NAME*) requests may set;
	// empty means any but messages.DefaultEnvDeny.
	EnvAllow  string        `envconfig:"ENV_ALLOW" desc:"env names and PREFIX*es a request may set; empty refuses the loader variables of the default deny list"`
	Reconcile time.Duration `envconfig:"RECONCILE_INTERVAL" default:"30s" desc:"how often the registry is compared with the backend"`
	// WarmPool is how many ready, unclaimed sessions to keep at hand.
	WarmPool int `envconfig:"WARM_POOL_SIZE" default:"0" desc:"ready, unclaimed sessions kept at hand"`
	// StopOnShutdown stops this provisioner's sessions when it exits. It is
	// always on for a local backend (Traits.Local), such as the process
	// backend, whose sessions cannot outlive it.
	StopOnShutdown bool `envconfig:"STOP_ON_SHUTDOWN" desc:"stop this provisioner's sessions when it exits (always on for the process backend)"`
}

// Deps are what a provisioner works with besides its settings.
type Deps struct {
	// NATS carries the spawn and stop requests and the events.
	NATS *nats.Conn
	// Registry is the session registry the provisioner keeps true.
	Registry *registry.Registry
	// Backend starts and stops the instances.
	Backend Backend
	// Now is the provisioner's clock; nil is time.Now.
	Now func() time.Time
	// Log receives the provisioner's messages; nil discards them.
	Log *slog.Logger
	// Metrics records spawns, failures and terminations; nil records nothing.
	Metrics *metrics.Metrics
	// Tokens, when set, gives every reply the session's access token.
	Tokens TokenSigner
	// Catalog is the apps requests may pick (SPAWNER_APPS); nil is the one
	// app the settings define.
	Catalog *catalog.Catalog
	// GatewayURL is where browsers reach the gateway, the base of session
	// URLs when cfg.PublicURL is empty. It is known only once the gateway
	// listens, so no setting's default can hold it.
	GatewayURL string
}

// TokenSigner derives a session's access token from its id.
type TokenSigner interface {
	Token(sessionID string) string
}

// Provisioner serves spawn and stop requests.
type Provisioner struct {
	cfg Config
	nc  *nats.Conn
	// js stores the events that end sessions (events.go).
	js      jetstream.JetStream
	reg     *registry.Registry
	backend Backend
	log     *slog.Logger
	subj    messages.Subjects
	now     func() time.Time
	mx      *metrics.Metrics
	tokens  TokenSigner
	// name is cfg.Name, or the host name when that is empty.
	name string
	// publicURL is cfg.PublicURL, or deps.GatewayURL when that is empty.
	publicURL string
	routing   messages.Routing
	env       messages.EnvPolicy
	// labels are the pool's labels (SPAWNER_POOL_LABELS).
	labels map[string]string
	// apps is the catalog in force; SetCatalog swaps it.
	apps atomic.Pointer[appSet]

	mu       sync.Mutex
	inflight map[string]bool
	ready    chan struct{}
	// started is when this provisioner came up: a creating record of its
	// own from before then belongs to a spawn that died with its last run.
	started time.Time
	// pool holds this provisioner's unclaimed warm sessions by app;
	// poolFilling counts the ones being started.
	pool        map[string][]string
	poolFilling map[string]int
	refill      chan struct{}
	// work serialises the operations on each session (workqueue.go).
	work *workQueue
}

// New builds a provisioner from its settings and its dependencies; Run
// starts it.
func New(cfg Config, deps Deps) (*Provisioner, error) {
	subj, err := messages.NewPoolSubjects(cfg.Prefix, cfg.Pool)
	if err != nil {
		return nil, fmt.Errorf("SPAWNER_POOL: %w", err)
	}
	labels, err := messages.ParsePoolLabels(cfg.PoolLabels)
	if err != nil {
		return nil, fmt.Errorf("SPAWNER_POOL_LABELS: %w", err)
	}
	name := cfg.Name
	if name == "" {
		// The host name is known only at run time, so no tag can hold it.
		name, _ = os.Hostname()
	}
	// The defaults live in the tags; zero here is a mistake to report.
	if cfg.Concurrency < 1 || cfg.StopConcurrency < 1 {
		return nil, fmt.Errorf("SPAWNER_SPAWN_CONCURRENCY (%d) and SPAWNER_STOP_CONCURRENCY (%d) must be at least 1", cfg.Concurrency, cfg.StopConcurrency)
	}
	if cfg.SpawnTimeout <= 0 {
		return nil, fmt.Errorf("spawn timeout must be positive, got %s", cfg.SpawnTimeout)
	}
	if cfg.Reconcile <= 0 {
		return nil, fmt.Errorf("SPAWNER_RECONCILE_INTERVAL must be positive, got %s", cfg.Reconcile)
	}
	routing, err := messages.ParseRouting(cfg.Routing)
	if err != nil {
		return nil, fmt.Errorf("SPAWNER_ROUTING: %w", err)
	}
	if routing == messages.RoutingSubdomain && cfg.SessionDomain == "" {
		return nil, errors.New("SPAWNER_ROUTING=subdomain needs SPAWNER_SESSION_DOMAIN")
	}
	env, err := messages.ParseEnvPolicy(cfg.EnvAllow)
	if err != nil {
		return nil, err
	}
	set, err := checkCatalog(cfg, deps.Catalog, routing)
	if err != nil {
		return nil, err
	}
	deps.Metrics.KnowApps(set.cat.Names())
	now, log := deps.Now, deps.Log
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "provisioner")
	p := &Provisioner{
		routing: routing, env: env, labels: labels, work: newWorkQueue(log),
		pool: map[string][]string{}, poolFilling: map[string]int{},
		cfg: cfg, nc: deps.NATS, reg: deps.Registry, backend: deps.Backend, subj: subj,
		log: log, now: now, mx: deps.Metrics, tokens: deps.Tokens, name: name, publicURL: cmp.Or(cfg.PublicURL, deps.GatewayURL),
		inflight: map[string]bool{}, refill: make(chan struct{}, 1), started: now(), ready: make(chan struct{}),
	}
	if deps.NATS != nil {
		if p.js, err = jetstream.New(deps.NATS); err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
	}
	p.apps.Store(set)
	return p, nil
}

// Ready is closed once the provisioner takes requests.
func (p *Provisioner) Ready() <-chan struct{} { return p.ready }

// Run serves requests until ctx is done, then stops taking work, lets the
// spawns in flight finish or roll back, and returns nil.
func (p *Provisioner) Run(ctx context.Context) error {
	exits := make(chan Exit, 64)
	backendCtx, stopBackend := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackend()
	backendDone := make(chan error, 1)
	go func() { backendDone <- p.backend.Run(backendCtx, exits) }()

	spawns := make(chan *nats.Msg, p.cfg.Concurrency*4)
	p.mx.TrackSpawnQueue(func() int { return len(spawns) })
	defer p.mx.TrackSpawnQueue(nil)
	spawnSub, err := p.nc.ChanQueueSubscribe(p.subj.Requested(), "provisioner", spawns)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", p.subj.Requested(), err)
	}
	stops := make(chan *nats.Msg, max(256, p.cfg.StopConcurrency*4))
	stopSub, err := p.nc.ChanQueueSubscribe(p.subj.Stop(), "provisioner", stops)
	if err != nil {
		_ = spawnSub.Unsubscribe()
		return fmt.Errorf("subscribe %s: %w", p.subj.Stop(), err)
	}
	// Stops handed on by another provisioner, for sessions only this one
	// can end; on the same workers as the others.
	ownerSub, err := p.nc.ChanSubscribe(p.subj.OwnerStop(p.name), stops)
	if err != nil {
		_ = spawnSub.Unsubscribe()
		_ = stopSub.Unsubscribe()
		return fmt.Errorf("subscribe %s: %w", p.subj.OwnerStop(p.name), err)
	}
	pingSub, err := p.nc.QueueSubscribe(p.subj.Ping(), "provisioner", func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
	if err != nil {
		_ = spawnSub.Unsubscribe()
		_ = stopSub.Unsubscribe()
		_ = ownerSub.Unsubscribe()
		return fmt.Errorf("subscribe %s: %w", p.subj.Ping(), err)
	}
	poolSubs, err := p.subscribePools(spawns)
	if err != nil {
		_ = spawnSub.Unsubscribe()
		_ = stopSub.Unsubscribe()
		_ = pingSub.Unsubscribe()
		return err
	}
	// The server must know the subscriptions before Ready tells anyone.
	_ = p.nc.Flush()
	close(p.ready)
	// Requests carry no deadline of their own; work outlives ctx so that a
	// spawn in flight at shutdown ends in ready or rolled back, never half.
	work := context.WithoutCancel(ctx)
	p.work.start(work, 8)
	var wg sync.WaitGroup
	for range p.cfg.Concurrency {
		wg.Go(func() {
			for msg := range spawns {
				p.handleSpawn(work, msg)
			}
		})
	}
	for range p.cfg.StopConcurrency {
		wg.Go(func() {
			for msg := range stops {
				p.handleStop(work, msg)
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-exits:
				p.queueExit(e)
			}
		}
	})
	wg.Go(func() { p.reconcileLoop(ctx) })
	wg.Go(func() { p.fillPool(ctx) })
	p.log.Info("provisioner started", "name", p.name, "pool", p.cfg.Pool, "backend", p.cfg.Backend, "concurrency", p.cfg.Concurrency)

	<-ctx.Done()
	_ = pingSub.Unsubscribe()
	for _, sub := range poolSubs {
		_ = sub.Unsubscribe()
	}
	// Drain delivers what is buffered and then closes the channels, so the
	// workers finish the requests they already accepted.
	_ = spawnSub.Drain()
	_ = stopSub.Drain()
	_ = ownerSub.Drain()
	waitDrained(spawnSub)
	waitDrained(stopSub)
	waitDrained(ownerSub)
	close(spawns)
	close(stops)
	wg.Wait()
	p.work.close()
	if p.cfg.StopOnShutdown || p.backend.Traits().Local {
		p.stopOwned(work)
	}
	stopBackend()
	<-backendDone
	p.log.Info("provisioner stopped")
	return nil
}

func waitDrained(sub *nats.Subscription) {
	deadline := time.Now().Add(5 * time.Second)
	for sub.IsValid() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// stopOwned ends every session this provisioner started.
func (p *Provisioner) stopOwned(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	entries, err := p.reg.List(ctx)
	if err != nil {
		p.log.Error("list sessions at shutdown", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, e := range entries {
		if e.Session.Owner != p.name {
			continue
		}
		wg.Go(func() {
			if _, err := p.Stop(ctx, e.Session.ID, messages.ReasonShutdown, "provisioner shutting down"); err != nil {
				p.log.Error("stop at shutdown", "session_id", e.Session.ID, "err", err)
			}
		})
	}
	wg.Wait()
}

// withToken adds the session's access token when per-session auth is on.
func (p *Provisioner) withToken(rep messages.SpawnReply) messages.SpawnReply {
	if p.tokens != nil && rep.SessionID != "" {
		rep.Token = p.tokens.Token(rep.SessionID)
	}
	return rep
}

func reply(msg *nats.Msg, v any) {
	if msg.Reply == "" {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	_ = msg.Respond(data)
}
