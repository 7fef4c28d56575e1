// Package process is the local-process backend: each session is a process
// group on this machine, started through sh so that $PORT expands, bound to
// a free loopback port. It is the embedded default.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// Config holds the process backend's settings.
type Config struct {
	// Command runs through "sh -c" with PORT, HOST, SPAWNER_SESSION_ID and
	// SPAWNER_SESSION_URL set. Empty means the bundled demo app.
	Command string `envconfig:"APP_COMMAND" desc:"the process backend's app, run by sh -c so $PORT expands; empty runs the bundled demo app"`
	// Host is the loopback address apps bind to.
	Host string `envconfig:"APP_HOST" default:"127.0.0.1" desc:"the loopback address process-backend apps bind to"`
	// StatusSource is "app" (the app serves /status) or "sidecar" (Spawner
	// watches the app's TCP connections itself).
	StatusSource string        `envconfig:"STATUS_SOURCE" default:"app" desc:"where activity comes from: app (its own /status) or sidecar"`
	StopGrace    time.Duration `envconfig:"STOP_GRACE" default:"3s" desc:"SIGTERM to SIGKILL for a session's process group"`
}

// StatusWatcher serves a /status for an app that has none; the sidecar
// package provides it. It returns the URL to poll and a function that
// stops serving.
type StatusWatcher func(host string, appPort int) (statusURL string, stop func(), err error)

// Backend runs sessions as local process groups.
type Backend struct {
	cfg     Config
	log     *slog.Logger
	watcher StatusWatcher
	client  readinessClient

	mu    sync.Mutex
	procs map[string]*proc
	// ports are handed to apps that may not have bound them yet; the
	// kernel does not know they are taken, so we remember.
	ports map[int]bool
	exits chan<- provisioner.Exit
}

type proc struct {
	cmd        *exec.Cmd
	port       int
	upstream   string
	statusURL  string
	done       chan struct{}
	stopping   bool
	stopStatus func()
}

// New builds the backend. command is the default app command, used when
// cfg.Command is empty. watcher may be nil unless cfg.StatusSource is sidecar.
func New(cfg Config, defaultCommand string, watcher StatusWatcher, log *slog.Logger) (*Backend, error) {
	if cfg.Command == "" {
		cfg.Command = defaultCommand
	}
	if strings.TrimSpace(cfg.Command) == "" {
		return nil, errors.New("process backend: no app command")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	switch cfg.StatusSource {
	case "", "app":
		cfg.StatusSource = "app"
	case "sidecar":
		if watcher == nil {
			return nil, errors.New("process backend: sidecar status source needs a watcher")
		}
	default:
		return nil, fmt.Errorf("process backend: status source %q: want app or sidecar", cfg.StatusSource)
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 3 * time.Second
	}
	return &Backend{cfg: cfg, log: log.With("component", "process-backend"), watcher: watcher,
		client: newReadinessClient(), procs: map[string]*proc{}, ports: map[int]bool{}}, nil
}

// Run keeps exits for instances that end on their own. When ctx ends it
// kills whatever is still running, so no app outlives Spawner.
func (b *Backend) Run(ctx context.Context, exits chan<- provisioner.Exit) error {
	b.mu.Lock()
	b.exits = exits
	b.mu.Unlock()
	<-ctx.Done()
	b.mu.Lock()
	b.exits = nil
	ids := make([]string, 0, len(b.procs))
	for id := range b.procs {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	for _, id := range ids {
		_ = b.Stop(context.Background(), id)
	}
	return nil
}

// script runs the command as a background job of a shell that kills its
// whole process group on SIGTERM. The shell gets SIGTERM when Spawner dies
// (Pdeathsig), even by kill -9, so grandchildren such as the python behind
// "python3 -m http.server" never outlive it.
func script(command string) string {
	return "trap 'kill -KILL 0' TERM INT HUP\n{\n" + command + "\n} &\nwait $!\n"
}

// Start runs the app on a free port and returns once it is ready.
func (b *Backend) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Instance, error) {
	port, err := b.reservePort()
	if err != nil {
		return provisioner.Instance{}, err
	}
	upstream := net.JoinHostPort(b.cfg.Host, strconv.Itoa(port))
	cmd := exec.Command("/bin/sh", "-c", script(b.cfg.Command))
	cmd.Env = appEnv(spec, b.cfg.Host, port)
	cmd.Dir = os.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	log := b.log.With("session_id", spec.SessionID)
	closeWriters, err := pipeOutput(cmd, log)
	if err != nil {
		b.releasePort(port)
		return provisioner.Instance{}, fmt.Errorf("start %s: %w", spec.SessionID, err)
	}
	err = cmd.Start()
	closeWriters()
	if err != nil {
		b.releasePort(port)
		return provisioner.Instance{}, fmt.Errorf("start %s: %w", spec.SessionID, err)
	}
	p := &proc{cmd: cmd, upstream: upstream, port: port, done: make(chan struct{})}
	b.mu.Lock()
	b.procs[spec.SessionID] = p
	b.mu.Unlock()
	go b.wait(spec.SessionID, p, log)
	log.Debug("app started", "pid", cmd.Process.Pid, "upstream", upstream)

	statusURL, err := b.awaitReady(ctx, p, upstream, port)
	if err != nil {
		_ = b.Stop(context.WithoutCancel(ctx), spec.SessionID)
		return provisioner.Instance{}, fmt.Errorf("app of %s: %w", spec.SessionID, err)
	}
	b.mu.Lock()
	p.statusURL = statusURL
	b.mu.Unlock()
	return provisioner.Instance{SessionID: spec.SessionID, Upstream: upstream, StatusURL: statusURL,
		Handle: "pid:" + strconv.Itoa(cmd.Process.Pid)}, nil
}

func (b *Backend) awaitReady(ctx context.Context, p *proc, upstream string, port int) (string, error) {
	if b.cfg.StatusSource == "sidecar" {
		if err := b.client.awaitListening(ctx, p.done, upstream); err != nil {
			return "", err
		}
		statusURL, stop, err := b.watcher(b.cfg.Host, port)
		if err != nil {
			return "", fmt.Errorf("status watcher: %w", err)
		}
		b.mu.Lock()
		p.stopStatus = stop
		b.mu.Unlock()
		return statusURL, nil
	}
	statusURL := "http://" + upstream + "/status"
	return statusURL, b.client.awaitStatus(ctx, p.done, statusURL)
}

func (b *Backend) wait(id string, p *proc, log *slog.Logger) {
	err := p.cmd.Wait()
	close(p.done)
	b.mu.Lock()
	stopping := p.stopping
	if b.procs[id] == p {
		delete(b.procs, id)
	}
	delete(b.ports, p.port)
	exits := b.exits
	stopStatus := p.stopStatus
	b.mu.Unlock()
	if stopStatus != nil {
		stopStatus()
	}
	// Kill what the app may have left in its group, such as a daemonised child.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if stopping {
		return
	}
	detail := "exit status 0"
	if err != nil {
		detail = err.Error()
	}
	log.Info("app exited", "detail", detail)
	if exits != nil {
		exits <- provisioner.Exit{SessionID: id, Reason: messages.ReasonExited, Detail: detail}
	}
}

// Stop kills the session's process group: SIGTERM, then SIGKILL after the
// grace period. A missing session is not an error.
func (b *Backend) Stop(ctx context.Context, id string) error {
	b.mu.Lock()
	p := b.procs[id]
	if p != nil {
		p.stopping = true
	}
	b.mu.Unlock()
	if p == nil {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(b.cfg.StopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop %s: process group %d did not exit", id, pgid)
	}
}

// List returns the running sessions.
func (b *Backend) List(context.Context) ([]provisioner.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]provisioner.Instance, 0, len(b.procs))
	for id, p := range b.procs {
		if p.stopping {
			continue
		}
		out = append(out, provisioner.Instance{SessionID: id, Upstream: p.upstream, StatusURL: p.statusURL,
			Handle: "pid:" + strconv.Itoa(p.cmd.Process.Pid)})
	}
	return out, nil
}

// reservePort finds a free port that no app of ours was given. Between
// the probe listener's close and the app's bind the kernel may offer the
// same port again, so concurrent spawns would otherwise collide.
func (b *Backend) reservePort() (int, error) {
	for range 32 {
		port, err := freePort(b.cfg.Host)
		if err != nil {
			return 0, err
		}
		b.mu.Lock()
		taken := b.ports[port]
		if !taken {
			b.ports[port] = true
		}
		b.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s after 32 tries", b.cfg.Host)
}

func (b *Backend) releasePort(port int) {
	b.mu.Lock()
	delete(b.ports, port)
	b.mu.Unlock()
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// appEnv passes Spawner's environment on without its own SPAWNER_ and NATS
// settings, which may hold tokens and passwords the app must not see.
func appEnv(spec provisioner.Spec, host string, port int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SPAWNER_") || strings.HasPrefix(kv, "NATS_") ||
			strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "HOST=") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	return append(env,
		"PORT="+strconv.Itoa(port),
		"HOST="+host,
		"SPAWNER_SESSION_ID="+spec.SessionID,
		"SPAWNER_SESSION_URL="+spec.URL,
		"SPAWNER_BASE_PATH="+spec.BasePathOrRoot(),
	)
}
