package kube

import (
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// The labels on every object Spawner creates. The informer selects on
// both, so a pod that merely says it is managed by Spawner but has no
// session is never mistaken for one.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "spawner"
	LabelSessionID = messages.LabelDomain + "session-id"
)

const (
	managedSelector  = LabelManagedBy + "=" + ManagedBy + "," + LabelSessionID
	namePrefix       = "s-"
	appContainer     = "app"
	sidecarContainer = "sidecar"
	portName         = "http"
	statusPortName   = "status"
	// maxTemplateBytes bounds the pod template file; real ones are a few KiB.
	maxTemplateBytes = 1 << 20
)

// ObjectName is the name of a session's Pod and Service: a DNS-1035 label,
// since session ids are 26 characters of [a-z2-7].
func ObjectName(sessionID string) string { return namePrefix + sessionID }

// LoadTemplate reads a pod template file: a Pod, or a PodTemplate whose
// template is used.
func LoadTemplate(path string) (*corev1.Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pod template: %w", err)
	}
	pod, err := ParseTemplate(data)
	if err != nil {
		return nil, fmt.Errorf("pod template %s: %w", path, err)
	}
	return pod, nil
}

// ParseTemplate decodes a pod template. Unknown fields are errors, so a
// misspelt setting is caught at start rather than silently ignored.
func ParseTemplate(data []byte) (*corev1.Pod, error) {
	if len(data) > maxTemplateBytes {
		return nil, fmt.Errorf("over %d bytes", maxTemplateBytes)
	}
	var head metav1.TypeMeta
	if err := yaml.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	if head.APIVersion != "" && head.APIVersion != "v1" {
		return nil, fmt.Errorf("apiVersion %q: want v1", head.APIVersion)
	}
	pod := &corev1.Pod{}
	switch head.Kind {
	case "", "Pod":
		if err := yaml.UnmarshalStrict(data, pod); err != nil {
			return nil, err
		}
	case "PodTemplate":
		var pt corev1.PodTemplate
		if err := yaml.UnmarshalStrict(data, &pt); err != nil {
			return nil, err
		}
		pod.ObjectMeta, pod.Spec = pt.Template.ObjectMeta, pt.Template.Spec
	default:
		return nil, fmt.Errorf("kind %q: want Pod or PodTemplate", head.Kind)
	}
	pod.TypeMeta, pod.Status = metav1.TypeMeta{}, corev1.PodStatus{}
	for _, ct := range pod.Spec.InitContainers {
		if ct.Name == appContainer {
			return nil, fmt.Errorf("the init container %q: that name is the app's", appContainer)
		}
	}
	return pod, nil
}

func templateImage(tmpl *corev1.Pod) string {
	if tmpl == nil {
		return ""
	}
	for _, ct := range tmpl.Spec.Containers {
		if ct.Name == appContainer {
			return ct.Image
		}
	}
	return ""
}

// podFor builds the session's pod: the template, with Spawner's settings
// on top. Spawner owns the name, its labels, the app container's image,
// port and environment, and the restart policy; the secure defaults fill
// only what the template leaves unset, so a template can opt out of them.
func (b *Backend) podFor(spec provisioner.Spec) (*corev1.Pod, error) {
	set, err := b.settingsOf(spec)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if set.template != nil {
		pod = set.template.DeepCopy()
	}
	meta := metav1.ObjectMeta{
		Name: ObjectName(spec.SessionID), Namespace: b.cfg.Namespace,
		Labels:      b.labels(pod.Labels, spec),
		Annotations: pod.Annotations,
	}
	if set.sources != b.sources {
		meta.Annotations = maps.Clone(meta.Annotations)
		if meta.Annotations == nil {
			meta.Annotations = map[string]string{}
		}
		meta.Annotations[AnnotationStatusSource] = set.sources.String()
	}
	pod.ObjectMeta = meta
	ps := &pod.Spec
	ps.RestartPolicy = corev1.RestartPolicyNever
	if ps.AutomountServiceAccountToken == nil {
		ps.AutomountServiceAccountToken = new(false)
	}
	if ps.TerminationGracePeriodSeconds == nil {
		ps.TerminationGracePeriodSeconds = new(int64(math.Ceil(b.cfg.StopGrace.Seconds())))
	}
	b.podSecurity(ps)

	i := slices.IndexFunc(ps.Containers, func(c corev1.Container) bool { return c.Name == appContainer })
	if i < 0 {
		ps.Containers = append([]corev1.Container{{Name: appContainer}}, ps.Containers...)
		i = 0
	}
	app := &ps.Containers[i]
	if spec.Image != "" {
		app.Image = spec.Image
	} else if b.cfg.Image != "" {
		app.Image = b.cfg.Image
	}
	app.Ports = withPort(app.Ports, portName, b.cfg.Port)
	app.Env = withEnv(app.Env, spec.Env)
	app.Env = withEnv(app.Env, map[string]string{
		"PORT":                strconv.Itoa(b.cfg.Port),
		"SPAWNER_SESSION_ID":  spec.SessionID,
		"SPAWNER_SESSION_URL": spec.URL,
		"SPAWNER_BASE_PATH":   spec.BasePathOrRoot(),
	})
	if len(set.limits) > 0 {
		// The app's limits win over the template's; its requests follow.
		if app.Resources.Limits == nil {
			app.Resources.Limits = corev1.ResourceList{}
		}
		for name, q := range set.limits {
			app.Resources.Limits[name] = q
			delete(app.Resources.Requests, name)
		}
	}
	app.Resources = withDefaults(app.Resources, b.defaults.requests, b.defaults.limits)
	if set.sources.Sidecar {
		ps.InitContainers = slices.DeleteFunc(ps.InitContainers, func(c corev1.Container) bool { return c.Name == sidecarContainer })
		ps.InitContainers = append(ps.InitContainers, b.sidecar())
	}
	for i := range ps.InitContainers {
		containerSecurity(&ps.InitContainers[i])
	}
	for i := range ps.Containers {
		containerSecurity(&ps.Containers[i])
	}
	return pod, nil
}

// labels are the template's, then the user's, then Spawner's own, which
// always win because the informer and the Service select on them.
func (b *Backend) labels(base map[string]string, spec provisioner.Spec) map[string]string {
	out := make(map[string]string, len(base)+len(spec.Labels)+2)
	for k, v := range base {
		out[k] = v
	}
	for k, v := range spec.Labels {
		out[k] = v
	}
	out[LabelManagedBy] = ManagedBy
	out[LabelSessionID] = spec.SessionID
	return out
}

// sidecar is a native sidecar (an init container that keeps running) that
// serves /status from the pod's TCP table. It binds the pod IP: pods that
// share a network, as on a simulated node, would clash on a wildcard.
func (b *Backend) sidecar() corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	return corev1.Container{
		Name:          sidecarContainer,
		Image:         b.cfg.SidecarImage,
		Args:          []string{"sidecar"},
		RestartPolicy: &always,
		Ports:         []corev1.ContainerPort{{Name: statusPortName, ContainerPort: int32(b.cfg.SidecarPort), Protocol: corev1.ProtocolTCP}},
		Env: []corev1.EnvVar{
			{Name: "SPAWNER_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "SPAWNER_APP_PORT", Value: strconv.Itoa(b.cfg.Port)},
			{Name: "SPAWNER_SIDECAR_ADDR", Value: "$(SPAWNER_POD_IP):" + strconv.Itoa(b.cfg.SidecarPort)},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(65532)),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// podSecurity fills the pod-level security settings the template left out.
func (b *Backend) podSecurity(ps *corev1.PodSpec) {
	if ps.SecurityContext == nil {
		ps.SecurityContext = &corev1.PodSecurityContext{}
	}
	sc := ps.SecurityContext
	if b.cfg.RunAsNonRoot {
		if sc.RunAsNonRoot == nil {
			sc.RunAsNonRoot = new(true)
		}
		if sc.RunAsUser == nil {
			sc.RunAsUser = new(b.cfg.RunAsUser)
			if sc.RunAsGroup == nil {
				sc.RunAsGroup = new(b.cfg.RunAsUser)
			}
		}
	}
	if sc.SeccompProfile == nil {
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
}

// containerSecurity fills a container's security settings that are unset.
func containerSecurity(ct *corev1.Container) {
	if ct.SecurityContext == nil {
		ct.SecurityContext = &corev1.SecurityContext{}
	}
	sc := ct.SecurityContext
	if sc.AllowPrivilegeEscalation == nil && (sc.Privileged == nil || !*sc.Privileged) {
		sc.AllowPrivilegeEscalation = new(false)
	}
	if sc.Capabilities == nil {
		sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
	}
}

// withPort puts the named port first, dropping any port that would clash.
func withPort(ports []corev1.ContainerPort, name string, port int) []corev1.ContainerPort {
	out := []corev1.ContainerPort{{Name: name, ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}}
	for _, p := range ports {
		if p.Name != name && int(p.ContainerPort) != port {
			out = append(out, p)
		}
	}
	return out
}

// withEnv sets vars on env, replacing same-named entries in place and
// appending the rest in sorted order so that the spec is deterministic.
func withEnv(env []corev1.EnvVar, vars map[string]string) []corev1.EnvVar {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == k })
		if i >= 0 {
			env[i] = corev1.EnvVar{Name: k, Value: vars[k]}
			continue
		}
		env = append(env, corev1.EnvVar{Name: k, Value: vars[k]})
	}
	return env
}

// withDefaults adds the default requests and limits for resources the
// template did not mention. A request above the default limit gets no
// default limit, which the API server would reject.
func withDefaults(r corev1.ResourceRequirements, requests, limits corev1.ResourceList) corev1.ResourceRequirements {
	for name, q := range requests {
		_, hasLimit := r.Limits[name]
		if _, ok := r.Requests[name]; !ok && !hasLimit {
			if r.Requests == nil {
				r.Requests = corev1.ResourceList{}
			}
			r.Requests[name] = q.DeepCopy()
		}
	}
	for name, q := range limits {
		if _, ok := r.Limits[name]; ok {
			continue
		}
		if req, ok := r.Requests[name]; ok && req.Cmp(q) > 0 {
			continue
		}
		if r.Limits == nil {
			r.Limits = corev1.ResourceList{}
		}
		r.Limits[name] = q.DeepCopy()
	}
	return r
}

// serviceFor is the session's ClusterIP Service, owned by its pod so the
// garbage collector removes it with the pod.
func (b *Backend) serviceFor(pod *corev1.Pod) *corev1.Service {
	id := pod.Labels[LabelSessionID]
	ports := []corev1.ServicePort{{Name: portName, Port: int32(b.cfg.Port), TargetPort: intstr.FromString(portName), Protocol: corev1.ProtocolTCP}}
	if hasSidecar(pod) {
		ports = append(ports, corev1.ServicePort{Name: statusPortName, Port: int32(b.cfg.SidecarPort),
			TargetPort: intstr.FromString(statusPortName), Protocol: corev1.ProtocolTCP})
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: new(true),
			}},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{LabelManagedBy: ManagedBy, LabelSessionID: id},
			Ports:    ports,
		},
	}
}

func hasSidecar(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == sidecarContainer })
}

// containerPort finds the named port of the named container, else fallback.
func containerPort(pod *corev1.Pod, container, name string, fallback int) int {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, ct := range list {
			if ct.Name != container {
				continue
			}
			for _, p := range ct.Ports {
				if p.Name == name {
					return int(p.ContainerPort)
				}
			}
		}
	}
	return fallback
}
