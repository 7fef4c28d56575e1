package provisioner

import (
	"context"
	"encoding/json"

	"github.com/spawnerhq/spawner/internal/catalog"

	"github.com/spawnerhq/spawner/messages"
)

// Backend runs session instances: processes, pods or containers. Only the
// provisioner calls it, so every start and stop takes the same path.
type Backend interface {
	// Run does the backend's background work (informers, child reaping)
	// until ctx is done, and reports the instances it sees end, its own
	// stops' included: the provisioner tells from the session's record
	// whether an end was expected.
	Run(ctx context.Context, exits chan<- Exit) error
	// Start creates the session's instance and returns once it serves, or
	// an error after cleaning up what it created.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Stop ends the session's instance. It succeeds for a missing instance
	// and is safe to call twice.
	Stop(ctx context.Context, sessionID string) error
	// List returns every instance the backend manages, for reconciliation.
	List(ctx context.Context) ([]Instance, error)
	// Traits says how the backend's instances behave, so the provisioner
	// decides by what a backend does rather than by its name.
	Traits() Traits
}

// Traits describe a backend to the provisioner.
type Traits struct {
	// Local means the instances run beside this provisioner and die with
	// it: it stops them when it exits, and its List shows only its own,
	// so it reconciles only the records it owns.
	Local bool
}

// Spec is what a backend needs to start one session.
type Spec struct {
	SessionID string
	// URL is the session's public URL, handed to the app.
	URL string
	// BasePath is the path prefix the app's pages live under, as the
	// proxy sends it: "/p/<id>/" with path-keep routing, "/" otherwise.
	BasePath string
	Env      map[string]string
	Labels   map[string]string
	// App names the catalog app; the fields after it are the app's, and
	// each empty one means the backend's own setting.
	App string
	// Command is the app's command (process backend).
	Command string
	// Image is the app's image (Docker, Kubernetes).
	Image string
	// Resources are the app's limits (Docker, Kubernetes).
	Resources catalog.Resources
	// PodTemplate is a JSON Pod or PodTemplate merged like
	// SPAWNER_POD_TEMPLATE, over it (Kubernetes).
	PodTemplate json.RawMessage
	// StatusSource is the app's SPAWNER_STATUS_SOURCE.
	StatusSource string
}

// Instance is a running session as the backend sees it.
type Instance struct {
	SessionID string
	// Upstream is the host:port the proxy forwards to.
	Upstream string
	// StatusURL is what the prober polls for activity.
	StatusURL string
	// Handle names the instance in the backend: a pid, a pod, a container.
	Handle string
	// ProxyActivity says the gateway's traffic count is one of the
	// instance's activity sources (SPAWNER_STATUS_SOURCE includes proxy).
	ProxyActivity bool
}

// Exit reports an instance that ended, whoever ended it: a stop, a
// failed start's cleanup, the app itself. Why a start failed is Start's
// to say; the provisioner tells the expected ends from the record.
type Exit struct {
	SessionID string
	Reason    messages.Reason
	Detail    string
}

// BasePathOrRoot is the spec's base path, "/" when the caller left it
// empty; backends hand it to apps as SPAWNER_BASE_PATH.
func (s Spec) BasePathOrRoot() string {
	if s.BasePath == "" {
		return "/"
	}
	return s.BasePath
}
