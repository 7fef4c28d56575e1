// Package catalog reads the operator's app catalog (SPAWNER_APPS): the
// named kinds of session one installation offers. A spawn request can only
// pick an app by name; the command, image and pod template stay the
// operator's, so a client never chooses what runs.
package catalog

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/spawnerhq/spawner/messages"
)

// DefaultName names the single app that today's settings define when no
// catalog is given.
const DefaultName = "default"

// MaxWarmPool bounds one app's warm pool, so that a typo cannot start
// thousands of sessions at once.
const MaxWarmPool = 1000

// Catalog is a validated set of apps with one default.
type Catalog struct {
	// File is where the catalog was read from, empty for the implicit one.
	File    string
	Default string
	apps    map[string]App
}

// App is one app of the catalog. Zero fields fall back to the
// installation's settings (SPAWNER_APP_COMMAND, SPAWNER_IDLE_TIMEOUT, ...).
type App struct {
	Name         string
	Description  string
	Command      string
	StatusSource string
	Routing      string
	IdleTimeout  time.Duration
	MaxLifetime  time.Duration
	WarmPool     int
	Env          map[string]string
	EnvAllow     []string
	Labels       map[string]string
	Image        string
	Resources    Resources
	// PodTemplate is a JSON object, merged like SPAWNER_POD_TEMPLATE.
	PodTemplate json.RawMessage
}

// Resources are an app's limits, in Kubernetes quantity syntax; the
// Docker backend converts them.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	GPU    int64  `json:"gpu,omitempty"`
}

// IsZero reports whether no resource is set.
func (r Resources) IsZero() bool { return r == Resources{} }

// Single is the catalog of one app, "default", with every field left to
// the installation's settings: what an installation without SPAWNER_APPS
// runs, so nothing changes for it.
func Single(warmPool int) *Catalog {
	return &Catalog{Default: DefaultName, apps: map[string]App{DefaultName: {Name: DefaultName, WarmPool: warmPool}}}
}

// Get returns the app called name; an empty name is the default app.
func (c *Catalog) Get(name string) (App, bool) {
	if name == "" {
		name = c.Default
	}
	a, ok := c.apps[name]
	return a, ok
}

// Names lists the apps' names in order.
func (c *Catalog) Names() []string {
	return slices.Sorted(maps.Keys(c.apps))
}

// Apps lists the apps in name order.
func (c *Catalog) Apps() []App {
	out := make([]App, 0, len(c.apps))
	for _, n := range c.Names() {
		out = append(out, c.apps[n])
	}
	return out
}

// Resolve finds the app a request names, or a bad_request error that lists
// the known ones.
func (c *Catalog) Resolve(name string) (App, error) {
	a, ok := c.Get(name)
	if !ok {
		return App{}, messages.Errorf(messages.CodeBadRequest, "app %q is not in the catalog; the apps are %s",
			name, strings.Join(c.Names(), ", "))
	}
	return a, nil
}

// Check runs fn on every app and returns the first error, naming the file,
// the app and, when fn returns a *FieldError, the field.
func (c *Catalog) Check(fn func(App) error) error {
	for _, a := range c.Apps() {
		if err := fn(a); err != nil {
			return c.wrap(a.Name, err)
		}
	}
	return nil
}

// FieldError says which field of an app is wrong.
type FieldError struct {
	Field string
	Err   error
}

// Error implements error.
func (e *FieldError) Error() string { return fmt.Sprintf("field %q: %v", e.Field, e.Err) }

// Unwrap returns the cause.
func (e *FieldError) Unwrap() error { return e.Err }

// Fieldf builds a *FieldError.
func Fieldf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

func (c *Catalog) wrap(app string, err error) error {
	return fmt.Errorf("catalog %s: app %q: %w", c.fileName(), app, err)
}

func (c *Catalog) fileName() string {
	if c.File == "" {
		return "(built in)"
	}
	return c.File
}

// namePattern keeps app names usable as label values and in URLs.
var namePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Fields lists an app's fields as the file spells them.
var Fields = []string{"description", "command", "status_source", "routing", "idle_timeout", "max_lifetime",
	"warm_pool", "env", "env_allow", "labels", "image", "resources", "pod_template"}

// validate turns what the file says about one app into an App.
func validate(name string, s appSpec) (App, error) {
	a := App{Name: name, Description: s.Description, Command: s.Command, StatusSource: s.StatusSource,
		Routing: s.Routing, WarmPool: s.WarmPool, Env: s.Env, EnvAllow: s.EnvAllow, Labels: s.Labels,
		Image: s.Image, PodTemplate: s.PodTemplate}
	if len(name) > 63 || !namePattern.MatchString(name) {
		return a, fmt.Errorf("the name is not lower-case letters, digits and dashes of at most 63 characters")
	}
	if s.Command != "" && strings.TrimSpace(s.Command) == "" {
		return a, Fieldf("command", "is blank")
	}
	if s.StatusSource != "" {
		if _, err := messages.ParseStatusSources(s.StatusSource); err != nil {
			return a, &FieldError{"status_source", err}
		}
	}
	if s.Routing != "" {
		if _, err := messages.ParseRouting(s.Routing); err != nil {
			return a, &FieldError{"routing", err}
		}
	}
	var err error
	if a.IdleTimeout, err = duration("idle_timeout", s.IdleTimeout, false); err != nil {
		return a, err
	}
	if a.MaxLifetime, err = duration("max_lifetime", s.MaxLifetime, true); err != nil {
		return a, err
	}
	if s.WarmPool < 0 || s.WarmPool > MaxWarmPool {
		return a, Fieldf("warm_pool", "%d: want 0 to %d", s.WarmPool, MaxWarmPool)
	}
	if err := (messages.SpawnRequest{Env: s.Env}).Validate(); err != nil {
		return a, &FieldError{"env", errMessage(err)}
	}
	if err := (messages.SpawnRequest{Labels: s.Labels}).Validate(); err != nil {
		return a, &FieldError{"labels", errMessage(err)}
	}
	if _, err := messages.ParseEnvPolicy(strings.Join(s.EnvAllow, ",")); err != nil {
		return a, &FieldError{"env_allow", err}
	}
	for _, e := range s.EnvAllow {
		if strings.ContainsAny(e, ", \t\n") || e == "" {
			return a, Fieldf("env_allow", "%q is not a variable name or a prefix ending in *", e)
		}
	}
	if a.Resources, err = resources(s.Resources); err != nil {
		return a, err
	}
	if len(s.PodTemplate) > 0 {
		var obj map[string]any
		if json.Unmarshal(s.PodTemplate, &obj) != nil || obj == nil {
			return a, Fieldf("pod_template", "want an object (a Pod or a PodTemplate, as in SPAWNER_POD_TEMPLATE)")
		}
	}
	return a, nil
}

// errMessage strips the bad_request code from a messages.Error.
func errMessage(err error) error {
	if e, ok := err.(*messages.Error); ok {
		return fmt.Errorf("%s", e.Message)
	}
	return err
}

func duration(field, s string, zeroOK bool) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, Fieldf(field, "%q is not a duration; write it like 30s, 10m or 8h", s)
	}
	if d < time.Second && !(zeroOK && d == 0) || d > messages.MaxTimeoutSeconds*time.Second {
		return 0, Fieldf(field, "%s: want 1s to %s", s, time.Duration(messages.MaxTimeoutSeconds)*time.Second)
	}
	return d, nil
}

func resources(r resourceSpec) (Resources, error) {
	out := Resources{CPU: string(r.CPU), Memory: string(r.Memory)}
	for _, q := range []struct{ field, v string }{{"resources.cpu", out.CPU}, {"resources.memory", out.Memory}} {
		if q.v == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.v)
		if err != nil || v.Sign() <= 0 {
			return out, Fieldf(q.field, "%q is not a positive quantity such as 500m, 2 or 1Gi", q.v)
		}
	}
	if r.GPU < 0 || r.GPU > 64 {
		return out, Fieldf("resources.gpu", "%d: want 0 to 64", r.GPU)
	}
	out.GPU = r.GPU
	return out, nil
}

// List describes the catalog for GET /apps.
func (c *Catalog) List() []messages.AppListing {
	out := []messages.AppListing{}
	for _, a := range c.Apps() {
		l := messages.AppListing{Name: a.Name, Default: a.Name == c.Default, Description: a.Description,
			StatusSource: a.StatusSource, Routing: a.Routing, IdleTimeoutSeconds: int64(a.IdleTimeout / time.Second),
			MaxLifetimeSeconds: int64(a.MaxLifetime / time.Second), WarmPool: a.WarmPool,
			EnvAllow: a.EnvAllow, Labels: a.Labels, Image: a.Image}
		for k := range a.Env {
			l.Env = append(l.Env, k)
		}
		sort.Strings(l.Env)
		if !a.Resources.IsZero() {
			r := messages.AppResources(a.Resources)
			l.Resources = &r
		}
		out = append(out, l)
	}
	return out
}
