package kube

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// baseConfig is the configuration with every default as LoadConfig sets it.
func baseConfig() Config {
	return Config{
		Namespace: "spawner", Image: "example/app:1", Port: 8080, ClusterDomain: "cluster.local",
		Route: RouteService, StatusSource: "app", SidecarPort: 7070, RunAsNonRoot: true, RunAsUser: 65532,
		CPURequest: "100m", MemRequest: "128Mi", CPULimit: "1", MemLimit: "512Mi",
		StopGrace: 3 * time.Second, APITimeout: 5 * time.Second,
	}
}

func newTestBackend(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := NewWithClient(cfg, fakeClient{fake.NewClientset()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTemplate(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const gpuTemplate = `
apiVersion: v1
kind: Pod
metadata:
  labels:
    team: data
    spawner.dev/session-id: not-this-one
  annotations:
    example.com/note: kept
spec:
  restartPolicy: Always
  nodeSelector:
    accelerator: gpu
  tolerations:
  - key: gpu
    operator: Exists
    effect: NoSchedule
  imagePullSecrets:
  - name: registry-creds
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: app
    image: ignored/by-config:0
    env:
    - name: FOO
      value: from-template
    - name: MODEL
      value: small
    volumeMounts:
    - name: scratch
      mountPath: /scratch
    resources:
      requests:
        cpu: "2"
      limits:
        cpu: "4"
        nvidia.com/gpu: "1"
  - name: logger
    image: example/logger:1
`

func TestPodForMergesTemplateUnderSpawnerSettings(t *testing.T) {
	cfg := baseConfig()
	cfg.PodTemplate = writeTemplate(t, gpuTemplate)
	b := newTestBackend(t, cfg)
	id := messages.NewSessionID()
	pod := mustPodFor(t, b, provisioner.Spec{SessionID: id, URL: "https://spawner.example/p/" + id + "/",
		Env: map[string]string{"FOO": "from-user", "TOKEN": "t"}, Labels: map[string]string{"tier": "free"}})

	if pod.Name != "s-"+id || pod.Namespace != "spawner" {
		t.Errorf("name %s/%s, want spawner/s-%s", pod.Namespace, pod.Name, id)
	}
	wantLabels := map[string]string{LabelManagedBy: "spawner", LabelSessionID: id, "team": "data", "tier": "free"}
	for k, v := range wantLabels {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Annotations["example.com/note"] != "kept" {
		t.Errorf("template annotation lost: %v", pod.Annotations)
	}
	ps := pod.Spec
	if ps.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %s, want Never", ps.RestartPolicy)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	if g := ps.TerminationGracePeriodSeconds; g == nil || *g != 3 {
		t.Errorf("termination grace %v, want 3", g)
	}
	if ps.NodeSelector["accelerator"] != "gpu" || len(ps.Tolerations) != 1 || len(ps.Volumes) != 1 ||
		len(ps.ImagePullSecrets) != 1 || ps.ImagePullSecrets[0].Name != "registry-creds" {
		t.Errorf("template scheduling settings lost: %+v", ps)
	}
	sc := ps.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v", sc)
	}
	if len(ps.Containers) != 2 || ps.Containers[0].Name != "app" || ps.Containers[1].Name != "logger" {
		t.Fatalf("containers %v", ps.Containers)
	}
	app := ps.Containers[0]
	if app.Image != "example/app:1" {
		t.Errorf("image %s, want the configured one", app.Image)
	}
	if len(app.Ports) != 1 || app.Ports[0].Name != "http" || app.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports %+v", app.Ports)
	}
	env := map[string]string{}
	for _, e := range app.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s appears twice", e.Name)
		}
		env[e.Name] = e.Value
	}
	for k, v := range map[string]string{"PORT": "8080", "SPAWNER_SESSION_ID": id, "SPAWNER_SESSION_URL": "https://spawner.example/p/" + id + "/", "SPAWNER_BASE_PATH": "/",
		"FOO": "from-user", "TOKEN": "t", "MODEL": "small"} {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	res := app.Resources
	for _, c := range []struct {
		list corev1.ResourceList
		name corev1.ResourceName
		want string
	}{
		{res.Requests, corev1.ResourceCPU, "2"}, {res.Limits, corev1.ResourceCPU, "4"},
		{res.Requests, corev1.ResourceMemory, "128Mi"}, {res.Limits, corev1.ResourceMemory, "512Mi"},
		{res.Limits, "nvidia.com/gpu", "1"},
	} {
		if q, ok := c.list[c.name]; !ok || q.Cmp(resource.MustParse(c.want)) != 0 {
			t.Errorf("resource %s = %v, want %s", c.name, c.list[c.name], c.want)
		}
	}
	for _, ct := range ps.Containers {
		s := ct.SecurityContext
		if s == nil || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
			s.Capabilities == nil || len(s.Capabilities.Drop) != 1 || s.Capabilities.Drop[0] != "ALL" {
			t.Errorf("container %s securityContext %+v", ct.Name, s)
		}
	}
}

func TestPodForDefaultsWithoutTemplate(t *testing.T) {
	b := newTestBackend(t, baseConfig())
	pod := mustPodFor(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
	app := pod.Spec.Containers[0]
	want := map[string]string{"requests.cpu": "100m", "requests.memory": "128Mi", "limits.cpu": "1", "limits.memory": "512Mi"}
	got := map[string]resource.Quantity{
		"requests.cpu": app.Resources.Requests[corev1.ResourceCPU], "requests.memory": app.Resources.Requests[corev1.ResourceMemory],
		"limits.cpu": app.Resources.Limits[corev1.ResourceCPU], "limits.memory": app.Resources.Limits[corev1.ResourceMemory],
	}
	for k, v := range want {
		if q := got[k]; q.Cmp(resource.MustParse(v)) != 0 {
			t.Errorf("%s = %s, want %s", k, q.String(), v)
		}
	}
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("unexpected init containers %v", pod.Spec.InitContainers)
	}
}

func TestPodForTemplateMayOptOutOfDefaults(t *testing.T) {
	cfg := baseConfig()
	cfg.Image = ""
	cfg.PodTemplate = writeTemplate(t, `
kind: PodTemplate
template:
  spec:
    automountServiceAccountToken: true
    securityContext:
      runAsUser: 1000
    containers:
    - name: app
      image: example/from-template:2
      resources:
        requests:
          memory: 1Gi
`)
	b := newTestBackend(t, cfg)
	pod := mustPodFor(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
	if !*pod.Spec.AutomountServiceAccountToken {
		t.Error("the template's explicit automountServiceAccountToken: true was overridden")
	}
	if u := *pod.Spec.SecurityContext.RunAsUser; u != 1000 {
		t.Errorf("runAsUser %d, want the template's 1000", u)
	}
	app := pod.Spec.Containers[0]
	if app.Image != "example/from-template:2" {
		t.Errorf("image %s, want the template's when none is configured", app.Image)
	}
	if _, ok := app.Resources.Limits[corev1.ResourceMemory]; ok {
		t.Errorf("a default memory limit below the 1Gi request was added: %v", app.Resources.Limits)
	}
}

func TestPodForRootImages(t *testing.T) {
	cfg := baseConfig()
	cfg.RunAsNonRoot = false
	b := newTestBackend(t, cfg)
	sc := mustPodFor(t, b, provisioner.Spec{SessionID: messages.NewSessionID()}).Spec.SecurityContext
	if sc.RunAsNonRoot != nil || sc.RunAsUser != nil {
		t.Errorf("runAsNonRoot off still sets %+v", sc)
	}
	if sc.SeccompProfile == nil {
		t.Error("seccomp dropped with runAsNonRoot")
	}
}

func TestSidecarPod(t *testing.T) {
	cfg := baseConfig()
	cfg.StatusSource, cfg.SidecarImage = "sidecar", "example/spawner:1"
	b := newTestBackend(t, cfg)
	pod := mustPodFor(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %v", pod.Spec.InitContainers)
	}
	sc := pod.Spec.InitContainers[0]
	if sc.Name != "sidecar" || sc.Image != "example/spawner:1" || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar %+v", sc)
	}
	env := map[string]string{}
	for _, e := range sc.Env {
		env[e.Name] = e.Value
	}
	if env["SPAWNER_APP_PORT"] != "8080" || env["SPAWNER_SIDECAR_ADDR"] != "$(SPAWNER_POD_IP):7070" {
		t.Errorf("sidecar env %v", env)
	}
	if *sc.SecurityContext.AllowPrivilegeEscalation || sc.Resources.Limits.Cpu().Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("sidecar is not tight: %+v %+v", sc.SecurityContext, sc.Resources)
	}
	pod.Status.PodIP = "10.0.0.7"
	if got := b.instance(pod).StatusURL; !strings.HasSuffix(got, ".svc.cluster.local:7070/status") {
		t.Errorf("status URL %s, want the sidecar's port on the Service", got)
	}
	if ports := b.serviceFor(pod).Spec.Ports; len(ports) != 2 || ports[1].Port != 7070 {
		t.Errorf("service ports %+v, want the app's and the sidecar's", ports)
	}
}

func TestServiceForIsOwnedByPod(t *testing.T) {
	b := newTestBackend(t, baseConfig())
	id := messages.NewSessionID()
	pod := mustPodFor(t, b, provisioner.Spec{SessionID: id, Labels: map[string]string{"tier": "free"}})
	pod.UID = "0b5a6f1e-1111-2222-3333-444455556666"
	svc := b.serviceFor(pod)
	if svc.Name != pod.Name || svc.Namespace != "spawner" || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("service %s/%s type %s", svc.Namespace, svc.Name, svc.Spec.Type)
	}
	refs := svc.OwnerReferences
	if len(refs) != 1 || refs[0].Kind != "Pod" || refs[0].APIVersion != "v1" || refs[0].Name != pod.Name || refs[0].UID != pod.UID {
		t.Errorf("ownerReferences %+v, want the pod", refs)
	}
	if svc.Spec.Selector[LabelSessionID] != id || svc.Spec.Selector[LabelManagedBy] != "spawner" || len(svc.Spec.Selector) != 2 {
		t.Errorf("selector %v", svc.Spec.Selector)
	}
	if svc.Labels["tier"] != "free" || svc.Labels[LabelSessionID] != id {
		t.Errorf("labels %v", svc.Labels)
	}
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 8080 || p[0].TargetPort.StrVal != "http" {
		t.Errorf("ports %+v", p)
	}
}

func TestInstanceRoutes(t *testing.T) {
	id := messages.NewSessionID()
	cases := []struct {
		route, domain, podIP string
		upstream, status     string
	}{
		{RouteService, "cluster.local", "10.1.2.3", "s-" + id + ".spawner.svc.cluster.local:8080", "http://s-" + id + ".spawner.svc.cluster.local:8080/status"},
		{RouteService, "corp.internal", "10.1.2.3", "s-" + id + ".spawner.svc.corp.internal:8080", "http://s-" + id + ".spawner.svc.corp.internal:8080/status"},
		{RoutePodIP, "cluster.local", "10.1.2.3", "10.1.2.3:8080", "http://10.1.2.3:8080/status"},
		{RoutePodIP, "cluster.local", "fd00::7", "[fd00::7]:8080", "http://[fd00::7]:8080/status"},
	}
	for _, c := range cases {
		cfg := baseConfig()
		cfg.Route, cfg.ClusterDomain = c.route, c.domain
		b := newTestBackend(t, cfg)
		pod := mustPodFor(t, b, provisioner.Spec{SessionID: id})
		pod.Status.PodIP = c.podIP
		inst := b.instance(pod)
		if inst.Upstream != c.upstream || inst.StatusURL != c.status || inst.SessionID != id || inst.Handle != "pod/spawner/s-"+id {
			t.Errorf("%s/%s: got %+v, want %s and %s", c.route, c.domain, inst, c.upstream, c.status)
		}
	}
}

func TestObjectNamesAreDNSLabels(t *testing.T) {
	for range 200 {
		name := ObjectName(messages.NewSessionID())
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			t.Fatalf("%s: %v", name, errs)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := map[string]func(*Config){
		"bad route":         func(c *Config) { c.Route = "ingress" },
		"no image":          func(c *Config) { c.Image = "" },
		"bad namespace":     func(c *Config) { c.Namespace = "Not_A_Namespace" },
		"bad port":          func(c *Config) { c.Port = 70000 },
		"bad quantity":      func(c *Config) { c.MemLimit = "much" },
		"sidecar, no image": func(c *Config) { c.StatusSource = "sidecar" },
		"sidecar on app":    func(c *Config) { c.StatusSource, c.SidecarImage, c.SidecarPort = "sidecar", "x", 8080 },
		"status source":     func(c *Config) { c.StatusSource = "guess" },
		"missing template":  func(c *Config) { c.PodTemplate = "/nonexistent/pod.yaml" },
	}
	for name, mutate := range cases {
		cfg := baseConfig()
		mutate(&cfg)
		if _, err := NewWithClient(cfg, fakeClient{fake.NewClientset()}, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
