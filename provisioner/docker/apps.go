package docker

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// LabelStatusSource records an app container's status source, so that
// List reports the instance as Start did when apps differ in theirs.
const LabelStatusSource = "spawner.dev/status-source"

// appSettings are what one session's app asks of the engine: the spec's
// app settings where it has them, the backend's otherwise.
type appSettings struct {
	image            string
	memory, nanoCPUs int64
	gpus             int64
	sources          messages.StatusSources
}

func (b *Backend) settingsOf(spec provisioner.Spec) (appSettings, error) {
	s := appSettings{image: b.cfg.Image, memory: b.memory, nanoCPUs: b.nanoCPUs, sources: b.sources}
	if spec.Image != "" {
		s.image = spec.Image
	}
	if spec.StatusSource != "" {
		src, err := messages.ParseStatusSources(spec.StatusSource)
		if err != nil {
			return s, fmt.Errorf("app %s: %w", spec.App, err)
		}
		s.sources = src
	}
	r := spec.Resources
	if r.Memory != "" {
		m, err := memoryOf(r.Memory)
		if err != nil {
			return s, fmt.Errorf("app %s: %w", spec.App, err)
		}
		s.memory = m
	}
	if r.CPU != "" {
		q, err := resource.ParseQuantity(r.CPU)
		if err != nil {
			return s, fmt.Errorf("app %s: cpu %q: %w", spec.App, r.CPU, err)
		}
		s.nanoCPUs = q.MilliValue() * 1_000_000
	}
	s.gpus = r.GPU
	return s, nil
}

// memoryOf reads a catalog memory quantity (Kubernetes syntax: 512Mi, 1Gi).
func memoryOf(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("memory %q: %w", s, err)
	}
	n := q.Value()
	if n < 6<<20 {
		return 0, fmt.Errorf("memory %q is under the engine's minimum of 6Mi", s)
	}
	return n, nil
}

// CheckApp refuses, at start, a catalog app this backend cannot run.
func CheckApp(cfg Config, a catalog.App) error {
	if a.Resources.Memory != "" {
		if _, err := memoryOf(a.Resources.Memory); err != nil {
			return catalog.Fieldf("resources.memory", "%v", err)
		}
	}
	if a.Image == "" && cfg.Image == "" {
		return catalog.Fieldf("image", "is empty, and so is SPAWNER_APPLICATION_IMAGE")
	}
	if a.StatusSource != "" {
		src, err := messages.ParseStatusSources(a.StatusSource)
		if err != nil {
			return catalog.Fieldf("status_source", "%v", err)
		}
		if src.Sidecar && cfg.SidecarImage == "" {
			return &catalog.FieldError{Field: "status_source", Err: errors.New("sidecar needs SPAWNER_SIDECAR_IMAGE")}
		}
	}
	return nil
}
