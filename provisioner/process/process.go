// Package process is the local-process backend: each session is a process
// group on this machine, started through sh so that $PORT expands, bound to
// a free loopback port. It is the embedded default.
package process

import (
	"cmp"
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
	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// Config holds the process backend's settings.
type Config struct {
	// Command runs through "sh -c" with PORT, HOST, SPAWNER_SESSION_ID and
	// SPAWNER_SESSION_URL set. Empty means the bundled demo app.
	Command string `envconfig:"APP_COMMAND" desc:"the process backend's app, run by sh -c so $PORT expands; empty runs the bundled demo app"`
	// Host is the loopback address apps bind to.
	Host string `envconfig:"APP_HOST" default:"127.0.0.1" desc:"the loopback address process-backend apps bind to"`
	// StatusSource is "app" (the app serves /status), "sidecar" (Spawner
	// watches the app's TCP connections itself) or "proxy" (the gateway
	// counts the session's traffic), or "app,proxy" or "sidecar,proxy".
	StatusSource string        `envconfig:"STATUS_SOURCE" default:"app" desc:"where activity comes from: app (its own /status), sidecar or proxy, or app,proxy or sidecar,proxy"`
	StopGrace    time.Duration `envconfig:"STOP_GRACE" default:"3s" desc:"SIGTERM to SIGKILL for a session's process group"`
	// Isolation keeps apps from Spawner and from each other: "namespaces"
	// (a uid of its own plus PID, mount and IPC namespaces with a private
	// /proc), "uid" (a uid of its own), "none", or "auto", the strongest
	// this host allows. Both need root.
	Isolation string `envconfig:"PROCESS_ISOLATION" default:"auto" desc:"how process-backend apps are kept apart: auto, namespaces, uid or none"`
	// UIDRange is "first-last", the unprivileged uids isolated apps run
	// as, one per live session; no user should own them.
	UIDRange string `envconfig:"PROCESS_UID_RANGE" default:"2000000000-2000065535" desc:"first-last: the uids isolated apps run as, one per live session"`
	// PortRange is "first-last", the ports apps are given. The default
	// lies below Linux's ephemeral range (32768-60999), where the kernel
	// puts every port it picks itself: another program's listener on
	// port 0, and the source port of every outgoing connection. Between
	// a port's check and the app's bind, such a port could be taken; the
	// integration suite saw an app fail with "address already in use"
	// while its readiness check found another program's server there.
	PortRange string `envconfig:"APP_PORT_RANGE" default:"20000-29999" desc:"first-last: the ports process-backend apps are given; keep it below the kernel's ephemeral range"`
	// Workdir, when set, is every app's working directory. Otherwise each
	// app gets a fresh one of mode 0700, its HOME, removed when it ends.
	Workdir string `envconfig:"APP_WORKDIR" desc:"every process-backend app's working directory; empty gives each a fresh private one"`
}

// StatusWatcher serves a /status for an app that has none; the sidecar
// package provides it. It returns the URL to poll and a function that
// stops serving.
type StatusWatcher func(host string, appPort int) (statusURL string, stop func(), err error)

// Backend runs sessions as local process groups.
type Backend struct {
	cfg Config
	// appCommand is cfg.Command, or the default command when that is empty.
	appCommand string
	sources    messages.StatusSources
	log        *slog.Logger
	watcher    StatusWatcher
	client     readinessClient
	// isolation is the level in force; exe is our own binary, which runs
	// the helper; binary is the app's program, made reachable to it.
	isolation    string
	exe, binary  string
	uidLo, uidHi uint32
	// portLo and portHi bound the ports apps are given (cfg.PortRange).
	portLo, portHi int
	runDone        <-chan struct{}

	mu    sync.Mutex
	procs map[string]*proc
	// ports are handed to apps that may not have bound them yet; the
	// kernel does not know they are taken, so we remember.
	ports map[int]bool
	exits chan<- provisioner.Exit
	// spare is the isolation helper waiting for the next session;
	// refilled, while one is being started, closes when it is, and
	// awaited says a start waits for that one (spare.go).
	spare    *spare
	refilled chan struct{}
	awaited  bool
}

type proc struct {
	cmd        *exec.Cmd
	port       int
	upstream   string
	statusURL  string
	done       chan struct{}
	stopStatus func()
	// uid is the session's own uid, 0 without isolation.
	uid uint32
	// workdir is removed when the app ends, unless it is the fixed one.
	workdir, removeDir string
	output             *tail
	// err is how the app ended, set before done closes.
	err error
	// proxy says the gateway's traffic count is one of its activity sources.
	proxy bool
}

// New builds the backend. command is the default app command, used when
// cfg.Command is empty. watcher may be nil unless cfg.StatusSource is sidecar.
func New(cfg Config, defaultCommand string, watcher StatusWatcher, log *slog.Logger) (*Backend, error) {
	// The bundled demo's command is known only at run time, so no tag can
	// hold it.
	command := cmp.Or(cfg.Command, defaultCommand)
	if strings.TrimSpace(command) == "" {
		return nil, errors.New("process backend: no app command")
	}
	sources, err := messages.ParseStatusSources(cfg.StatusSource)
	if err != nil {
		return nil, fmt.Errorf("process backend: %w", err)
	}
	if sources.Sidecar && watcher == nil {
		return nil, errors.New("process backend: sidecar status source needs a watcher")
	}
	// The defaults live in the tags (settings.Defaults gives them to code
	// that builds a Config by hand); an empty one here is a mistake.
	if cfg.Host == "" || cfg.StopGrace <= 0 {
		return nil, fmt.Errorf("process backend: SPAWNER_APP_HOST (%q) must be set and SPAWNER_STOP_GRACE (%s) positive", cfg.Host, cfg.StopGrace)
	}
	if cfg.Workdir != "" {
		if info, err := os.Stat(cfg.Workdir); err != nil || !info.IsDir() {
			return nil, fmt.Errorf("process backend: app workdir %q is not a directory", cfg.Workdir)
		}
	}
	b := &Backend{cfg: cfg, appCommand: command, sources: sources, log: log.With("component", "process-backend"), watcher: watcher,
		client: newReadinessClient(), procs: map[string]*proc{}, ports: map[int]bool{}}
	if b.portLo, b.portHi, err = parsePortRange(cfg.PortRange); err != nil {
		return nil, fmt.Errorf("process backend: SPAWNER_APP_PORT_RANGE: %w", err)
	}
	if err := b.setupIsolation(); err != nil {
		return nil, fmt.Errorf("process backend: %w", err)
	}
	return b, nil
}

// setupIsolation settles the isolation level, and says loudly when apps
// will run as Spawner's own user although nobody asked for that.
func (b *Backend) setupIsolation() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find our own binary: %w", err)
	}
	// The helper that isolates apps starts once per spawn and per stop, so
	// the lean binary runs it where there is one.
	b.exe = apphelper.Executable(exe)
	if b.uidLo, b.uidHi, err = parseUIDRange(b.cfg.UIDRange); err != nil {
		return err
	}
	if b.isolation, err = chooseIsolation(b.cfg.Isolation, b.exe); err != nil {
		return err
	}
	if b.isolation == IsolationNamespaces {
		b.binary = appBinary(b.appCommand)
	}
	if b.isolation == IsolationNone && b.cfg.Isolation != IsolationNone {
		b.log.Error("APPS ARE NOT ISOLATED: they run as Spawner's own user and can read its " +
			"environment and data dir, and signal it and each other; run Spawner as root to isolate " +
			"them, or set SPAWNER_PROCESS_ISOLATION=none to accept this")
	} else {
		b.log.Info("app isolation", "level", b.isolation)
	}
	return nil
}

// Isolation is the level in force: namespaces, uid or none.
func (b *Backend) Isolation() string { return b.isolation }

// Traits says a process dies with the provisioner that started it.
func (b *Backend) Traits() provisioner.Traits { return provisioner.Traits{Local: true} }

// Run keeps exits for instances that end on their own. When ctx ends it
// kills whatever is still running, so no app outlives Spawner.
func (b *Backend) Run(ctx context.Context, exits chan<- provisioner.Exit) error {
	b.mu.Lock()
	b.exits = exits
	b.runDone = ctx.Done()
	b.mu.Unlock()
	b.refill()
	<-ctx.Done()
	b.mu.Lock()
	b.exits = nil
	ids := make([]string, 0, len(b.procs))
	for id := range b.procs {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	b.dropSpare()
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
	sources, err := b.sourcesOf(spec)
	if err != nil {
		b.mu.Lock()
		delete(b.ports, port)
		b.mu.Unlock()
		return provisioner.Instance{}, err
	}
	p := &proc{upstream: upstream, port: port, done: make(chan struct{}), output: &tail{}, proxy: sources.Proxy}
	if err := b.prepare(spec.SessionID, p); err != nil {
		b.cleanup(p)
		return provisioner.Instance{}, fmt.Errorf("start the app: %w", err)
	}
	log := b.log.With("session_id", spec.SessionID)
	if err := b.launch(ctx, spec, p, log); err != nil {
		b.cleanup(p)
		return provisioner.Instance{}, fmt.Errorf("start the app: %w", err)
	}
	cmd := p.cmd
	b.mu.Lock()
	b.procs[spec.SessionID] = p
	b.mu.Unlock()
	go b.wait(spec.SessionID, p, log)
	log.Debug("app started", "pid", cmd.Process.Pid, "upstream", upstream)

	statusURL, err := b.awaitReady(ctx, sources, p, upstream, port)
	b.refill()
	if err != nil {
		_ = b.Stop(context.WithoutCancel(ctx), spec.SessionID)
		if errors.Is(err, errExited) {
			// The provisioner names the session; this says what the app did.
			return provisioner.Instance{}, exitError(p)
		}
		return provisioner.Instance{}, fmt.Errorf("the app: %w", err)
	}
	b.mu.Lock()
	p.statusURL = statusURL
	b.mu.Unlock()
	return provisioner.Instance{SessionID: spec.SessionID, Upstream: upstream, StatusURL: statusURL,
		Handle: "pid:" + strconv.Itoa(cmd.Process.Pid), ProxyActivity: sources.Proxy}, nil
}

// launch starts the app's process: through a spare isolation helper when
// apps get namespaces, else its shell directly.
func (b *Backend) launch(ctx context.Context, spec provisioner.Spec, p *proc, log *slog.Logger) error {
	if b.isolation == IsolationNamespaces {
		s, err := b.startIsolated(ctx, b.job(spec, p))
		if err != nil {
			return err
		}
		p.cmd = s.cmd
		p.output.readers.Add(1)
		go logLines(s.out, p.output, log)
		return nil
	}
	p.cmd = b.command(spec, p)
	closeWriters, err := pipeOutput(p.cmd, p.output, log)
	if err != nil {
		return err
	}
	err = p.cmd.Start()
	closeWriters()
	return err
}

// awaitReady waits until the app serves, and returns the URL the prober
// polls: the app's /status, the sidecar watcher's, or none when the proxy
// alone counts the session's activity.
func (b *Backend) awaitReady(ctx context.Context, sources messages.StatusSources, p *proc, upstream string, port int) (string, error) {
	if !sources.Polled() {
		return "", b.client.awaitListening(ctx, p.done, upstream)
	}
	if sources.Sidecar {
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
	// Kill what the app may have left in its group, such as a daemonised
	// child, then whatever else runs as its uid: a setsid daemon leaves
	// the group, but not the uid. In a PID namespace there is nothing
	// left: the isolation helper was its first process, and the kernel
	// ends every other one before that one's exit is reported, so no
	// helper (a Go binary's start, 10-15 ms of CPU) runs for it.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if p.uid != 0 && b.isolation != IsolationNamespaces {
		if kerr := killUID(b.exe, p.uid); kerr != nil {
			log.Error("end the app's stragglers", "err", kerr)
		}
	}
	b.mu.Lock()
	if b.procs[id] == p {
		delete(b.procs, id)
	}
	exits, runDone := b.exits, b.runDone
	stopStatus := p.stopStatus
	b.mu.Unlock()
	if stopStatus != nil {
		stopStatus()
	}
	b.cleanup(p)
	p.err = err
	close(p.done)
	detail := "exit status 0"
	if err != nil {
		detail = err.Error()
	}
	// Stops end apps too; the provisioner tells those from the record.
	log.Info("app exited", "detail", detail)
	if exits != nil {
		// Once Run has ended nobody reads exits; do not wait for them.
		select {
		case exits <- provisioner.Exit{SessionID: id, Reason: messages.ReasonExited, Detail: detail}:
		case <-runDone:
		}
	}
}

// Stop kills the session's process group: SIGTERM, then SIGKILL after the
// grace period. A missing session is not an error.
func (b *Backend) Stop(ctx context.Context, id string) error {
	b.mu.Lock()
	p := b.procs[id]
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
		out = append(out, provisioner.Instance{SessionID: id, Upstream: p.upstream, StatusURL: p.statusURL,
			Handle: "pid:" + strconv.Itoa(p.cmd.Process.Pid), ProxyActivity: p.proxy})
	}
	return out, nil
}
