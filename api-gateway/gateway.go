// Package gateway is Spawner's HTTP face: the API that spawns, lists and
// ends sessions over NATS, and the reverse proxy that carries each
// session's traffic, WebSockets included, to its upstream.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the gateway's settings.
type Config struct {
	Prefix   string `envconfig:"PREFIX" default:"spawner" desc:"prefix of every subject, stream and bucket"`
	HTTPAddr string `envconfig:"HTTP_ADDR" default:":8080" desc:"the gateway's listen address"`
	// PublicURL is the base of session URLs; the provisioner builds them.
	PublicURL    string        `envconfig:"PUBLIC_URL" desc:"base of session URLs, e.g. https://example.com (default: from the listen address)"`
	SpawnTimeout time.Duration `envconfig:"SPAWN_TIMEOUT" default:"60s" desc:"a session not ready in this time fails"`
	// UpstreamIdle closes idle keep-alive connections to apps. It must be
	// well below any idle timeout, because an app or sidecar that counts
	// TCP connections sees an idle pooled connection as a user.
	UpstreamIdle time.Duration `envconfig:"PROXY_UPSTREAM_IDLE" default:"1s" desc:"idle keep-alive connections to apps close after this"`
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"5s" desc:"on shutdown, how long requests in flight may finish"`
	// EventsKeepalive is how often an idle event stream gets a comment, so
	// that proxies and load balancers do not close it.
	EventsKeepalive time.Duration `envconfig:"EVENTS_KEEPALIVE" default:"15s" desc:"comment interval on idle event streams"`
	// Metrics receives the proxy's and event streams' observations and is
	// served at /metrics; nil turns both off.
	Metrics *metrics.Metrics `ignored:"true"`
	// AuthConfig holds the API and session token rules; it is embedded so
	// its variables keep their short names.
	AuthConfig
}

// Gateway serves the API and the proxy.
type Gateway struct {
	cfg    Config
	nc     *nats.Conn
	reg    *registry.Registry
	log    *slog.Logger
	subj   messages.Subjects
	routes *routeTable
	beats  *heartbeatCache
	synced atomic.Bool
	// provisionerSeen is when a provisioner last answered a ping, in Unix ns.
	provisionerSeen atomic.Int64
	proxy           *proxy
	// openStreams counts event streams against MaxEventStreams.
	openStreams atomic.Int64
	// closing is closed at shutdown to end event streams, which never go
	// idle by themselves and would hold up the drain.
	closing     chan struct{}
	closingOnce sync.Once
}

// New builds a gateway; Run serves it.
func New(cfg Config, nc *nats.Conn, reg *registry.Registry, log *slog.Logger) (*Gateway, error) {
	subj, err := messages.NewSubjects(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if cfg.UpstreamIdle <= 0 {
		cfg.UpstreamIdle = time.Second
	}
	if cfg.EventsKeepalive <= 0 {
		cfg.EventsKeepalive = 15 * time.Second
	}
	g := &Gateway{cfg: cfg, nc: nc, reg: reg, subj: subj, log: log.With("component", "gateway"),
		routes: newRouteTable(), beats: newHeartbeatCache(), closing: make(chan struct{})}
	g.proxy = newProxy(cfg.UpstreamIdle, g.log)
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
		{"GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}, true},
		{"GET /readyz", g.handleReady, true},
		{"GET /metrics", g.handleMetrics, true},
		{"GET /openapi.json", handleOpenAPI, true},
		{"GET /{$}", handleDashboard, false},
		{"GET /assets/", handleAssets, false},
		{"/p/", g.handleProxy, false},
		{"/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
		}, false},
	}
}

// Handler returns the gateway's HTTP handler, for embedding and tests.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range g.httpRoutes() {
		h := rt.handler
		if rt.api && !openPath(rt.pattern) {
			h = g.requireAPIToken(h)
		}
		mux.HandleFunc(rt.pattern, h)
	}
	return mux
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
	srv := &http.Server{
		Handler: g.Handler(),
		// Slow clients must not pin connections: headers have a deadline,
		// bodies are bounded per handler, and idle keep-alives are closed.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(func() { g.closingOnce.Do(func() { close(g.closing) }) })
	feedDone := make(chan struct{})
	feedCtx, stopFeeds := context.WithCancel(ctx)
	go func() { defer close(feedDone); g.feed(feedCtx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	g.log.Info("gateway listening", "addr", ln.Addr().String())
	select {
	case err := <-serveErr:
		stopFeeds()
		<-feedDone
		return fmt.Errorf("gateway serve: %w", err)
	case <-ctx.Done():
	}
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		g.log.Warn("drain cut short", "err", err)
		_ = srv.Close()
	}
	g.proxy.closeIdle()
	stopFeeds()
	<-feedDone
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// feed keeps the route table and heartbeat cache current until ctx ends.
func (g *Gateway) feed(ctx context.Context) {
	sub, err := g.nc.Subscribe(g.subj.Heartbeats(), g.beats.record)
	if err != nil {
		g.log.Error("subscribe heartbeats", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	for {
		err := g.reg.Watch(ctx, func(c registry.Change) {
			if c.Synced {
				g.synced.Store(true)
				return
			}
			if c.Deleted {
				g.routes.remove(c.ID)
				g.beats.forget(c.ID)
				return
			}
			g.routes.apply(c.Session)
		})
		if ctx.Err() != nil {
			return
		}
		g.synced.Store(false)
		g.log.Warn("registry watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (g *Gateway) handleReady(w http.ResponseWriter, _ *http.Request) {
	switch {
	case !g.nc.IsConnected():
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "not connected to NATS"))
	case !g.synced.Load():
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "session registry not loaded yet"))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// sessionIDFromProxyPath splits "/p/<id>/rest" into id and "/rest".
func sessionIDFromProxyPath(path string) (id, rest string, ok bool) {
	after, found := strings.CutPrefix(path, "/p/")
	if !found {
		return "", "", false
	}
	id, rest, found = strings.Cut(after, "/")
	if !found {
		return id, "", true
	}
	return id, "/" + rest, true
}
