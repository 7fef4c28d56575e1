// Package docker is the Docker backend: each session is a container on a
// user-defined bridge network, started through the Engine API, with its
// limits, labels and privileges set by Spawner rather than by the image.
package docker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"sync"

	"github.com/docker/docker/client"
	units "github.com/docker/go-units"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// The labels Spawner puts on every container and network it creates. The
// network label scopes an installation: List and the exit watcher see only
// containers of this backend's network, so two installations on one engine
// never reap each other's sessions.
const (
	LabelManagedBy = "spawner.dev/managed-by"
	LabelSession   = "spawner.dev/session-id"
	LabelRole      = "spawner.dev/role"
	LabelNetwork   = "spawner.dev/network"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "spawner"
)

// The roles of a session's containers, in LabelRole.
const (
	RoleApp     = "app"
	RoleSidecar = "sidecar"
)

// SidecarPort is where the sidecar serves /status, inside the app's
// network namespace.
const SidecarPort = 7070

// Config holds the Docker backend's settings. The engine itself is found
// the way the docker CLI finds it: DOCKER_HOST, DOCKER_CERT_PATH and
// DOCKER_TLS_VERIFY, else the local socket.
type Config struct {
	// Image is the session app's image. It must already be on the engine:
	// the backend never pulls.
	Image string `envconfig:"APPLICATION_IMAGE" default:"spawner-demo:latest" desc:"the session app's image (docker: must be on the engine, never pulled; kubernetes: overrides the pod template's)"`
	// Port is where the app listens inside its container; it gets it as PORT.
	Port int `envconfig:"APPLICATION_PORT" default:"8080" desc:"the port the app listens on inside its container, given to it as PORT"`
	// Network is the user-defined bridge network sessions join, created if
	// missing.
	Network string `envconfig:"DOCKER_NETWORK" default:"spawner" desc:"the bridge network session containers join, created if missing"`
	// Route is how the proxy reaches a container: "ip" (its address on the
	// network) or "name" (its container name, resolved by Docker's DNS,
	// when Spawner itself runs on that network).
	Route string `envconfig:"DOCKER_ROUTE" default:"ip" desc:"how the proxy reaches a container: ip or name"`
	// Memory limits each app container, in Docker's notation (256m, 1g);
	// 0 means no limit.
	Memory string `envconfig:"DOCKER_MEMORY" default:"256m" desc:"memory limit of each app container (256m, 1g; 0 for none)"`
	// CPUs limits each app container; 0 means no limit.
	CPUs float64 `envconfig:"DOCKER_CPUS" default:"1" desc:"CPU limit of each app container; 0 means none"`
	// PidsLimit bounds the processes in each app container, so that a fork
	// bomb stays inside its session; 0 means no limit.
	PidsLimit int64 `envconfig:"DOCKER_PIDS_LIMIT" default:"512" desc:"process limit of each app container; 0 means none"`
	// ReadOnly mounts the app's root filesystem read-only, with a small
	// tmpfs on /tmp.
	ReadOnly bool `envconfig:"DOCKER_READ_ONLY" desc:"mount each app container's root filesystem read-only, with a tmpfs on /tmp"`
	// StatusSource is "app" (the app serves /status) or "sidecar" (a second
	// container in the app's network namespace serves it).
	StatusSource string `envconfig:"STATUS_SOURCE" default:"app" desc:"where activity comes from: app (its own /status) or sidecar"`
	// SidecarImage runs "spawner sidecar"; its entrypoint must be spawner.
	SidecarImage string `envconfig:"SIDECAR_IMAGE" default:"spawner:latest" desc:"the image that runs spawner sidecar beside each app"`
}

// Backend runs sessions as Docker containers.
type Backend struct {
	cfg      Config
	sources  messages.StatusSources
	memory   int64
	nanoCPUs int64
	cli      *client.Client
	log      *slog.Logger
	http     provisioner.StatusChecker

	mu sync.Mutex
	// starting holds sessions whose Start is in flight; Start handles
	// their exits itself. The die events of a stop are reported, and the
	// provisioner knows them from the record.
	starting map[string]bool
}

// networkPattern is Docker's rule for network names, so a typo fails at
// start rather than at the first spawn.
var networkPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// New checks cfg and connects to the engine lazily: the first call does
// the API version negotiation.
func New(cfg Config, log *slog.Logger) (*Backend, error) {
	if cfg.Image == "" {
		return nil, errors.New("docker backend: no application image")
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("docker backend: application port %d: want 1-65535", cfg.Port)
	}
	if !networkPattern.MatchString(cfg.Network) {
		return nil, fmt.Errorf("docker backend: network %q is not a valid network name", cfg.Network)
	}
	switch cfg.Route {
	case "ip", "name":
	default:
		return nil, fmt.Errorf("docker backend: route %q: want ip or name", cfg.Route)
	}
	sources, err := messages.ParseStatusSources(cfg.StatusSource)
	if err != nil {
		return nil, fmt.Errorf("docker backend: %w", err)
	}
	if sources.Sidecar && cfg.SidecarImage == "" {
		return nil, errors.New("docker backend: sidecar status source needs a sidecar image")
	}
	memory, err := parseMemory(cfg.Memory)
	if err != nil {
		return nil, err
	}
	if cfg.CPUs < 0 || cfg.CPUs > 1024 {
		return nil, fmt.Errorf("docker backend: cpus %g: want 0 (no limit) to 1024", cfg.CPUs)
	}
	if cfg.PidsLimit < 0 {
		return nil, fmt.Errorf("docker backend: pids limit %d: want 0 (no limit) or more", cfg.PidsLimit)
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker backend: engine client: %w", err)
	}
	return &Backend{
		cfg: cfg, sources: sources, memory: memory, nanoCPUs: int64(cfg.CPUs * 1e9), cli: cli,
		log: log.With("component", "docker-backend"), http: provisioner.NewStatusChecker(),
		starting: map[string]bool{},
	}, nil
}

// parseMemory reads Docker's notation, where "m" means MiB as in
// "docker run --memory".
func parseMemory(s string) (int64, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("docker backend: memory %q: want a size such as 256m or 1g", s)
	}
	// The engine refuses less than 6 MiB; saying so here is clearer.
	if n < 6<<20 {
		return 0, fmt.Errorf("docker backend: memory %q is under the engine's minimum of 6m", s)
	}
	return n, nil
}

// appName is the app container's name, which Docker's DNS resolves on the
// network when the route is "name".
func appName(sessionID string) string { return "spawner-" + sessionID }

func sidecarName(sessionID string) string { return "spawner-" + sessionID + "-sidecar" }

// endpoint is the host part of a session's upstream: its IP or its name.
func (b *Backend) endpoint(sessionID, ip string) string {
	if b.cfg.Route == "name" {
		return appName(sessionID)
	}
	return ip
}

func (b *Backend) instance(sessionID, host, handle string, sources messages.StatusSources) provisioner.Instance {
	upstream := net.JoinHostPort(host, strconv.Itoa(b.cfg.Port))
	statusURL := "http://" + upstream + "/status"
	switch {
	case sources.Sidecar:
		// The sidecar shares the app's network namespace, so it answers on
		// the app's address.
		statusURL = "http://" + net.JoinHostPort(host, strconv.Itoa(SidecarPort)) + "/status"
	case !sources.Polled():
		statusURL = "" // The gateway alone counts the session's activity.
	}
	return provisioner.Instance{SessionID: sessionID, Upstream: upstream, StatusURL: statusURL, Handle: handle,
		ProxyActivity: sources.Proxy}
}

func (b *Backend) setStarting(id string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.starting[id] = true
	} else {
		delete(b.starting, id)
	}
}

// startInFlight reports whether a Start of the session is under way: a
// container of it that ends is Start's to report.
func (b *Backend) startInFlight(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starting[id]
}
