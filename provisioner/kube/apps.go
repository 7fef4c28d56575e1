package kube

import (
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// AnnotationStatusSource records a pod's status source, so that List
// reports the instance as Start did when apps differ in theirs. It is an
// annotation because "sidecar,proxy" is no valid label value.
const AnnotationStatusSource = "spawner.dev/status-source"

// ResourceGPU is the resource a catalog app's gpu count asks for.
const ResourceGPU corev1.ResourceName = "nvidia.com/gpu"

// appSettings are the spec's app settings turned into what the pod needs.
type appSettings struct {
	template *corev1.Pod
	sources  messages.StatusSources
	limits   corev1.ResourceList
}

func (b *Backend) settingsOf(spec provisioner.Spec) (appSettings, error) {
	s := appSettings{template: b.template, sources: b.sources}
	if spec.StatusSource != "" {
		src, err := messages.ParseStatusSources(spec.StatusSource)
		if err != nil {
			return s, fmt.Errorf("app %s: %w", spec.App, err)
		}
		s.sources = src
	}
	if len(spec.PodTemplate) > 0 {
		tmpl, err := mergeTemplate(b.template, spec.PodTemplate)
		if err != nil {
			return s, fmt.Errorf("app %s: pod_template: %w", spec.App, err)
		}
		s.template = tmpl
	}
	limits, err := limitsOf(spec.Resources)
	if err != nil {
		return s, fmt.Errorf("app %s: %w", spec.App, err)
	}
	s.limits = limits
	return s, nil
}

// mergeTemplate lays an app's pod template over the installation's with a
// strategic merge, as kubectl patches: containers merge by name, so an app
// can add a node selector or a volume and keep the rest.
func mergeTemplate(base *corev1.Pod, app json.RawMessage) (*corev1.Pod, error) {
	own, err := ParseTemplate(app)
	if err != nil {
		return nil, err
	}
	if base == nil {
		return own, nil
	}
	baseJSON, err := json.Marshal(base)
	if err != nil {
		return nil, err
	}
	patch, err := json.Marshal(own)
	if err != nil {
		return nil, err
	}
	merged, err := strategicpatch.StrategicMergePatch(baseJSON, patch, corev1.Pod{})
	if err != nil {
		return nil, fmt.Errorf("merge over SPAWNER_POD_TEMPLATE: %w", err)
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(merged, out); err != nil {
		return nil, err
	}
	return out, nil
}

// limitsOf turns an app's resources into the app container's limits;
// with no request given, Kubernetes requests the same.
func limitsOf(r catalog.Resources) (corev1.ResourceList, error) {
	if r.IsZero() {
		return nil, nil
	}
	out := corev1.ResourceList{}
	for _, q := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, r.CPU}, {corev1.ResourceMemory, r.Memory}} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", q.name, q.value, err)
		}
		out[q.name] = v
	}
	if r.GPU > 0 {
		out[ResourceGPU] = *resource.NewQuantity(r.GPU, resource.DecimalSI)
	}
	return out, nil
}

// CheckApp refuses, at start, a catalog app this backend cannot run.
func CheckApp(cfg Config, a catalog.App) error {
	if len(a.PodTemplate) > 0 {
		if _, err := ParseTemplate(a.PodTemplate); err != nil {
			return catalog.Fieldf("pod_template", "%v", err)
		}
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

// sourcesOf reads the status source a pod was started with.
func (b *Backend) sourcesOf(pod *corev1.Pod) messages.StatusSources {
	if v := pod.Annotations[AnnotationStatusSource]; v != "" {
		if src, err := messages.ParseStatusSources(v); err == nil {
			return src
		}
	}
	return b.sources
}
