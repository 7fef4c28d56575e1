// Package demo is the bundled session app: a shared note, edited live by everyone who opens the session's URL.
//
// It doubles as the reference for what Spawner expects of a session app:
// listen on $PORT, serve /status with the seed's document so the reaper
// can tell an idle session from a busy one, and use only relative URLs
// because the proxy serves each session under its own path prefix.
package demo

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// Config is where the app listens; Spawner sets PORT for every session.
type Config struct {
	// Port is the TCP port to listen on.
	Port int `envconfig:"PORT" default:"8080" desc:"the demo app's port (set by Spawner for every session)"`
	// Host is the interface to bind; empty means all of them.
	Host string `envconfig:"HOST" desc:"the demo app's address to bind; empty means every interface"`
}

//go:embed index.html
var pageFS embed.FS

// pageTmpl is parsed once at start-up so a broken page fails loudly in
// tests rather than on a user's first request.
var pageTmpl = template.Must(template.ParseFS(pageFS, "index.html"))

const (
	// maxMessage bounds one WebSocket message; the note travels whole in
	// every edit, so this is also the largest note that can be shared.
	maxMessage = 1 << 20
	// shutdownGrace is how long Run waits for in-flight requests and
	// WebSocket close handshakes before giving up on them.
	shutdownGrace = 5 * time.Second
)

// App is one running demo: the shared note, its connected clients and the
// activity bookkeeping behind /status.
type App struct {
	log        *slog.Logger
	hub        *hub
	sessionID  string
	sessionURL string
	// basePath is where the app's pages live, "/p/<id>/" under path-keep
	// routing; /status stays at the root, where the prober asks.
	basePath string

	// pingEvery and writeTimeout are fields rather than constants so tests
	// can shorten them.
	pingEvery    time.Duration
	writeTimeout time.Duration

	// conns tracks WebSocket handlers so shutdown can wait for their close
	// handshakes, which http.Server.Shutdown does not see once hijacked.
	conns sync.WaitGroup
	// onListen, when set, learns the bound address; tests use it with port 0.
	onListen func(net.Addr)

	cfg Config
}

// New returns an App; a nil clock means time.Now and a nil log discards.
func New(cfg Config, clock func() time.Time, log *slog.Logger) *App {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &App{
		log: log,
		hub: newHub(clock, log),
		// Read here rather than in Config because they describe the
		// session, not where to listen, and Spawner always passes them.
		sessionID:    os.Getenv("SPAWNER_SESSION_ID"),
		sessionURL:   os.Getenv("SPAWNER_SESSION_URL"),
		basePath:     os.Getenv("SPAWNER_BASE_PATH"),
		pingEvery:    20 * time.Second,
		writeTimeout: 10 * time.Second,
		cfg:          cfg,
	}
}

// Handler returns the app's routes, usable on its own or behind a prefix.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.servePage)
	mux.HandleFunc("GET /ws", a.serveWS)
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	base := strings.TrimRight(a.basePath, "/")
	if base == "" {
		return mux
	}
	outer := http.NewServeMux()
	outer.HandleFunc("GET /status", a.serveStatus)
	outer.Handle(base+"/", http.StripPrefix(base, mux))
	return outer
}

// Run serves on Config's address until ctx ends, then shuts down gracefully and returns nil.
func (a *App) Run(ctx context.Context) error {
	addr := net.JoinHostPort(a.cfg.Host, strconv.Itoa(a.cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if a.onListen != nil {
		a.onListen(ln.Addr())
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// Hijacked WebSockets are invisible to Shutdown, so tell them to close
	// ourselves; otherwise browsers would only notice on the next ping.
	srv.RegisterOnShutdown(a.hub.closeAll)
	a.log.Info("demo listening", "addr", ln.Addr().String(), "session_id", a.sessionID)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	waited := make(chan struct{})
	go func() { a.conns.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-sctx.Done():
		a.log.Warn("websockets still open after shutdown grace")
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if shutErr != nil && !errors.Is(shutErr, context.DeadlineExceeded) {
		return shutErr
	}
	return nil
}

type pageData struct {
	SessionID  string
	SessionURL string
}

func (a *App) servePage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page embeds per-session data; a shared cache must not reuse it.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Session URLs can be capabilities; keep them out of Referer headers.
	w.Header().Set("Referrer-Policy", "no-referrer")
	if err := pageTmpl.Execute(w, pageData{SessionID: a.sessionID, SessionURL: a.sessionURL}); err != nil {
		a.log.Warn("render page", "err", err)
	}
}

func (a *App) serveStatus(w http.ResponseWriter, _ *http.Request) {
	active, inactive := a.hub.status()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(messages.AppStatus{
		ActiveConnections: active,
		SecondsInactive:   int64(inactive / time.Second),
		Listening:         true,
	})
}
