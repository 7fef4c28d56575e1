package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Config is the sidecar's configuration, read from the environment.
type Config struct {
	// AppPort is the port the app listens on, whose connections count.
	AppPort int `envconfig:"APP_PORT" required:"true" desc:"the app's port, whose connections count as activity (spawner sidecar)"`
	// ListenAddr is where the sidecar serves /status; it must not be the
	// app port, or the prober's own polls would count as activity.
	ListenAddr string `envconfig:"SIDECAR_ADDR" default:":7070" desc:"where spawner sidecar serves /status"`
}

// DefaultListenAddr is the sidecar's address when Config.ListenAddr is empty.
const DefaultListenAddr = ":7070"

// shutdownGrace bounds how long Run waits for in-flight polls on shutdown;
// a poll takes milliseconds, so anything longer is a stuck client.
const shutdownGrace = 5 * time.Second

// Sidecar serves an app's connection status over HTTP.
type Sidecar struct {
	addr    string
	watcher *Watcher
	server  *http.Server
	log     *slog.Logger
}

// New validates cfg and returns a Sidecar watching the tables of its own
// network namespace. clock is time.Now when nil; log is discarded when nil.
func New(cfg Config, clock func() time.Time, log *slog.Logger) (*Sidecar, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := cfg.ListenAddr
	if addr == "" {
		addr = DefaultListenAddr
	}
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sidecar: listen address %q: %w", addr, err)
	}
	if listenPort, err := strconv.Atoi(portStr); err == nil && listenPort == cfg.AppPort {
		return nil, fmt.Errorf("sidecar: listen address %q uses the app port", addr)
	}
	w, err := NewWatcher(cfg.AppPort, clock, DefaultTables)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{addr: addr, watcher: w, log: log}
	s.server = &http.Server{
		Handler: handler(w, log),
		// Probes are tiny GETs on a private network; tight limits keep a
		// slow or broken client from holding goroutines and sockets.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Watcher returns the Watcher behind the sidecar's /status.
func (s *Sidecar) Watcher() *Watcher { return s.watcher }

// Run listens on the configured address and serves until ctx is done, then
// shuts down gracefully and returns nil.
func (s *Sidecar) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened, which lets tests and
// supervisors bind port 0 or pass down a socket. It closes ln.
func (s *Sidecar) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("sidecar serving", "addr", ln.Addr().String(), "app_port", s.watcher.Port())
	errc := make(chan error, 1)
	go func() { errc <- s.server.Serve(ln) }()

	select {
	case err := <-errc:
		// Serve only returns early on a listener failure.
		return fmt.Errorf("sidecar: serving: %w", err)
	case <-ctx.Done():
	}
	// The parent context is done, so shutdown needs its own deadline.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := s.server.Shutdown(sctx); err != nil {
		_ = s.server.Close()
		return fmt.Errorf("sidecar: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sidecar: serving: %w", err)
	}
	s.log.Info("sidecar stopped")
	return nil
}
