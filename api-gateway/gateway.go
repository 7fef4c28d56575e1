// Package gateway is Spawner's HTTP face: the API that spawns, lists and
// ends sessions over NATS, and the reverse proxy that carries each
// session's traffic, WebSockets included, to its upstream.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the gateway's settings.
type Config struct {
	settings.Layout
	// PoolFallback lists the pools to try, in order, when a request names
	// a pool that has no provisioner.
	PoolFallback string `envconfig:"POOL_FALLBACK" desc:"gateway: pools to send a request to, in order, when the pool it names has no provisioner, as eu-2,us-1; empty answers 503"`
	// PoolWait is how long the gateway collects the answers of every pool:
	// the pool directory for placement by label, and session lists.
	PoolWait time.Duration `envconfig:"POOL_WAIT" default:"300ms" desc:"gateway: how long answers from every pool are collected, for placement by label and for listing the sessions of every pool"`
	// Hub makes GET /sessions and the dashboard list every pool's sessions
	// unless ?pool= names one.
	Hub      bool   `envconfig:"HUB" desc:"gateway: GET /sessions and the dashboard list the sessions of every pool, not only this gateway's own"`
	HTTPAddr string `envconfig:"HTTP_ADDR" default:":8080" desc:"the gateway's listen address"`
	// Sessions are the URL and spawn settings the provisioner shares.
	settings.Sessions
	// Probing is how often the proxy's view of session activity is
	// published, for sessions with the proxy status source; zero publishes
	// nothing, for gateways whose sessions never use that source.
	settings.Probing
	// UpstreamIdle closes idle keep-alive connections to apps. It must be
	// well below any idle timeout, because an app or sidecar that counts
	// TCP connections sees an idle pooled connection as a user.
	UpstreamIdle time.Duration `envconfig:"PROXY_UPSTREAM_IDLE" default:"1s" desc:"idle keep-alive connections to apps close after this"`
	// ProxyFast serves session connections with the fast server
	// (fastserve.go); off, net/http serves everything.
	ProxyFast bool `envconfig:"PROXY_FAST" default:"true" desc:"serve session traffic with the fast HTTP server; false serves everything with net/http"`
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"5s" desc:"on shutdown, how long requests in flight may finish"`
	// EventsKeepalive is how often an idle event stream gets a comment, so
	// that proxies and load balancers do not close it.
	EventsKeepalive time.Duration `envconfig:"EVENTS_KEEPALIVE" default:"15s" desc:"comment interval on idle event streams"`
	// APIBodyTimeout bounds how long an API request body may take to
	// arrive; without it a body trickled at 1 byte/s was read forever.
	// Negative turns it off.
	APIBodyTimeout time.Duration `envconfig:"API_BODY_TIMEOUT" default:"10s" desc:"an API request body must arrive within this (408 otherwise); negative turns it off"`
	// ProxyBodyIdle cuts a request body on its way to an app when nothing
	// arrives for this long; after that long, ProxyBodyMinRate (bytes per
	// second, on average) must also be kept. Negative turns each off.
	ProxyBodyIdle    time.Duration `envconfig:"PROXY_BODY_IDLE" default:"30s" desc:"a request body to an app that sends nothing for this long is cut; negative turns it off"`
	ProxyBodyMinRate int64         `envconfig:"PROXY_BODY_MIN_RATE" default:"1024" desc:"bytes per second a request body to an app must average once SPAWNER_PROXY_BODY_IDLE has passed; negative turns it off"`
	// AuthConfig holds the API token rules; it is embedded so its
	// variables keep their short names.
	AuthConfig
}

// Deps are what a gateway works with besides its settings.
type Deps struct {
	// NATS carries the spawn and stop requests, events and the registry watch.
	NATS *nats.Conn
	// Registry is where the gateway finds sessions.
	Registry *registry.Registry
	// Log receives the gateway's messages; nil discards them.
	Log *slog.Logger
	// Metrics receives the proxy's and event streams' observations and is
	// served at /metrics; nil turns both off.
	Metrics *metrics.Metrics
	// Catalog is the apps /init may pick and GET /apps lists (SPAWNER_APPS);
	// nil is the single default app.
	Catalog *catalog.Catalog
	// SessionTokens, when set, makes the proxy require each session's own
	// access token, as returned by /init.
	SessionTokens SessionVerifier
	// Cache is a registry copy shared with the process's other components,
	// which the process keeps current; nil makes the gateway keep its own.
	Cache *registry.Cache
}

// Gateway serves the API and the proxy.
type Gateway struct {
	cfg    Config
	nc     *nats.Conn
	reg    *registry.Registry
	log    *slog.Logger
	mx     *metrics.Metrics
	tokens SessionVerifier
	subj   messages.Subjects
	cache  *registry.Cache
	// ownCache says the gateway runs its cache; a shared one is run by
	// the process.
	ownCache bool
	list     *sessionList
	routes   *routeTable
	router   router
	// name tells this replica's activity reports from other replicas'.
	name  string
	beats *heartbeatCache
	// provisionerSeen is when a provisioner last answered each ping
	// subject, a time.Time.
	provisionerSeen sync.Map
	// fallback is SPAWNER_POOL_FALLBACK; directory caches the pools.
	fallback  []string
	directory poolDirectory
	// apps is the catalog in force; SetCatalog swaps it.
	apps  atomic.Pointer[catalog.Catalog]
	proxy *proxy
	// openStreams counts event streams against MaxEventStreams.
	openStreams atomic.Int64
	// closing is closed at shutdown to end event streams, which never go
	// idle by themselves and would hold up the drain.
	closing     chan struct{}
	closingOnce sync.Once
	knownRoutes
}

// New builds a gateway from its settings and its dependencies; Serve
// serves it.
func New(cfg Config, deps Deps) (*Gateway, error) {
	subj, err := messages.NewPoolSubjects(cfg.Prefix, cfg.Pool)
	if err != nil {
		return nil, err
	}
	// The defaults live in the tags (settings.Defaults gives them to code
	// that builds a Config by hand); a zero here is a mistake to report.
	if cfg.UpstreamIdle <= 0 || cfg.EventsKeepalive <= 0 {
		return nil, fmt.Errorf("SPAWNER_PROXY_UPSTREAM_IDLE (%s) and SPAWNER_EVENTS_KEEPALIVE (%s) must be positive",
			cfg.UpstreamIdle, cfg.EventsKeepalive)
	}
	if cfg.APIBodyTimeout == 0 || cfg.ProxyBodyIdle == 0 || cfg.ProxyBodyMinRate == 0 {
		return nil, fmt.Errorf("SPAWNER_API_BODY_TIMEOUT (%s), SPAWNER_PROXY_BODY_IDLE (%s) and SPAWNER_PROXY_BODY_MIN_RATE (%d) "+
			"must not be 0; a negative value turns each off", cfg.APIBodyTimeout, cfg.ProxyBodyIdle, cfg.ProxyBodyMinRate)
	}
	routing, err := messages.ParseRouting(cfg.Routing)
	if err != nil {
		return nil, fmt.Errorf("SPAWNER_ROUTING: %w", err)
	}
	if routing == messages.RoutingSubdomain && strings.Trim(cfg.SessionDomain, ".") == "" {
		return nil, errors.New("SPAWNER_ROUTING=subdomain needs SPAWNER_SESSION_DOMAIN")
	}
	fallback, err := parseFallback(cfg.PoolFallback)
	if err != nil {
		return nil, err
	}
	if cfg.PoolWait <= 0 {
		return nil, fmt.Errorf("SPAWNER_POOL_WAIT must be positive, got %s", cfg.PoolWait)
	}
	if cfg.ProbeInterval < 0 {
		return nil, fmt.Errorf("probe interval must not be negative, got %s", cfg.ProbeInterval)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, nc: deps.NATS, reg: deps.Registry, subj: subj, log: log.With("component", "gateway"),
		mx: deps.Metrics, tokens: deps.SessionTokens,
		routes: newRouteTable(), router: newRouter(routing, cfg.SessionDomain), name: replicaName(),
		beats: newHeartbeatCache(), list: newSessionList(), closing: make(chan struct{}), fallback: fallback}
	g.proxy = newProxy(cfg.UpstreamIdle, g.log)
	cat := deps.Catalog
	if cat == nil {
		cat = catalog.Single(0)
	}
	g.SetCatalog(cat)
	g.cache, g.ownCache = deps.Cache, deps.Cache == nil
	if g.ownCache {
		g.cache = registry.NewCache(g.reg, g.nc, g.log)
	}
	g.cache.OnChange(g.applyChange)
	return g, nil
}

// route is one pattern of the gateway's mux. The api routes are the ones
// openapi.json must describe; a test holds the two together.
type route struct {
	pattern string
	handler http.HandlerFunc
	api     bool
}

// httpRoutes lists every route the gateway serves.
func (g *Gateway) httpRoutes() []route {
	return []route{
		{"POST /init", g.handleInit, true},
		{"GET /sessions", g.handleList, true},
		{"GET /sessions/{id}", g.handleGet, true},
		{"DELETE /sessions/{id}", g.handleDelete, true},
		{"GET /sessions/{id}/events", g.handleSessionEvents, true},
		{"GET /events", g.handleEvents, true},
		{"GET /apps", g.handleApps, true},
		{"GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}, true},
		{"GET /readyz", g.handleReady, true},
		{"GET /metrics", g.handleMetrics, true},
		{"GET /openapi.json", handleOpenAPI, true},
		{"GET /{$}", handleDashboard, false},
		{"GET /assets/", handleAssets, false},
		{"/p/", g.proxyRoute(), false},
		{"/", g.handleNoRoute, false},
	}
}

// Handler returns the gateway's HTTP handler, for embedding and tests.
// Under subdomain routing a session's host reaches its session and
// nothing else: never the API or the dashboard.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range g.httpRoutes() {
		h := rt.handler
		if rt.api && !openPath(rt.pattern) {
			h = g.requireAPIToken(h)
		}
		mux.HandleFunc(rt.pattern, h)
	}
	if g.router.mode != messages.RoutingSubdomain {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := g.router.sessionHost(r.Host); ok {
			g.handleProxy(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Ready is closed once the gateway has loaded the session registry, from
// when /readyz answers 200 and the proxy knows every session.
func (g *Gateway) Ready() <-chan struct{} { return g.cache.Synced() }

// proxyRoute is the handler of /p/: the proxy, or under subdomain routing
// an answer that says where sessions are.
func (g *Gateway) proxyRoute() http.HandlerFunc {
	if g.router.mode == messages.RoutingSubdomain {
		return g.proxyPathUnused
	}
	return g.handleProxy
}

// replicaName is the host name plus a random suffix, unique per process.
func replicaName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Run listens on cfg.HTTPAddr until ctx is done, then stops taking new
// connections and gives requests in flight DrainTimeout to finish.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", g.cfg.HTTPAddr, err)
	}
	return g.Serve(ctx, ln)
}

// Serve is Run on a listener the caller made.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	const headerTimeout, idleTimeout = 10 * time.Second, 90 * time.Second
	srv := &http.Server{
		Handler: g.Handler(),
		// Slow clients must not pin connections: headers have a deadline,
		// bodies are bounded per handler, and idle keep-alives are closed.
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(func() { g.closingOnce.Do(func() { close(g.closing) }) })
	var feeds sync.WaitGroup
	feedCtx, stopFeeds := context.WithCancel(ctx)
	feeds.Go(func() { g.feed(feedCtx) })
	feeds.Go(func() { g.publishActivity(feedCtx) })
	if sub, err := g.answerSessionLists(); err != nil {
		g.log.Error("subscribe session lists", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	servers := g.startServers(srv, ln, headerTimeout, idleTimeout)
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "fast_proxy", g.cfg.ProxyFast)
	var err error
	select {
	case err = <-servers.failed:
		err = fmt.Errorf("gateway serve: %w", err)
	case <-ctx.Done():
	}
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.DrainTimeout)
	defer cancel()
	servers.shutdown(drainCtx, g.log)
	g.proxy.closeIdle()
	stopFeeds()
	feeds.Wait()
	return err
}

// feed keeps the registry cache, and with it the route table, and the
// heartbeat cache current until ctx ends.
func (g *Gateway) feed(ctx context.Context) {
	sub, err := g.nc.Subscribe(g.subj.Heartbeats(), g.beats.record)
	if err != nil {
		g.log.Error("subscribe heartbeats", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	if g.ownCache {
		_ = g.cache.Run(ctx)
		return
	}
	<-ctx.Done()
}

// applyChange follows the registry into the route table and the list.
func (g *Gateway) applyChange(c registry.Change) {
	g.list.apply(c)
	switch {
	case c.Synced:
	case c.Deleted:
		g.routes.remove(c.ID)
		g.beats.forget(c.ID)
	default:
		g.routes.apply(c.Session)
	}
}

func (g *Gateway) handleReady(w http.ResponseWriter, _ *http.Request) {
	switch {
	case !g.nc.IsConnected():
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "not connected to NATS"))
	case !g.cache.IsSynced():
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "session registry not loaded yet"))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
