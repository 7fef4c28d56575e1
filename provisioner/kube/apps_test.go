package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func mustPodFor(t *testing.T, b *Backend, spec provisioner.Spec) *corev1.Pod {
	t.Helper()
	pod, err := b.podFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

const kubeApps = `
default: small
apps:
  small: {}
  gpu:
    image: example/gpu:2
    status_source: sidecar,proxy
    resources: {cpu: "2", memory: 4Gi, gpu: 1}
    pod_template:
      metadata: {annotations: {team: ml}}
      spec:
        nodeSelector: {accelerator: a100}
        containers:
        - name: app
          volumeMounts: [{name: scratch, mountPath: /scratch}]
        volumes: [{name: scratch, emptyDir: {}}]
`

func specOf(id string, a catalog.App) provisioner.Spec {
	return provisioner.Spec{SessionID: id, App: a.Name, Image: a.Image, Resources: a.Resources,
		PodTemplate: a.PodTemplate, StatusSource: a.StatusSource, Command: a.Command}
}

// The catalog's pod template merges over SPAWNER_POD_TEMPLATE, and the
// app's image, resources and status source arrive on the pod.
func TestCatalogAppArrivesOnThePod(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte(kubeApps))
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.SidecarImage = "example/spawner:1"
	cfg.PodTemplate = writeTemplate(t, "spec:\n  priorityClassName: sessions\n  containers:\n  - name: app\n    workingDir: /work\n")
	if err := c.Check(func(a catalog.App) error { return CheckApp(cfg, a) }); err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, cfg)
	gpu, _ := c.Get("gpu")
	id := messages.NewSessionID()
	pod := mustPodFor(t, b, specOf(id, gpu))
	app := pod.Spec.Containers[0]
	if pod.Spec.NodeSelector["accelerator"] != "a100" || pod.Spec.PriorityClassName != "sessions" || len(pod.Spec.Volumes) != 1 {
		t.Errorf("template not merged: %+v", pod.Spec)
	}
	if app.Name != "app" || app.WorkingDir != "/work" || len(app.VolumeMounts) != 1 || app.Image != "example/gpu:2" {
		t.Errorf("app container %+v", app)
	}
	lim := app.Resources.Limits
	if !lim.Cpu().Equal(resource.MustParse("2")) || !lim.Memory().Equal(resource.MustParse("4Gi")) || lim.Name(ResourceGPU, resource.DecimalSI).Value() != 1 {
		t.Errorf("limits %v", lim)
	}
	if _, ok := app.Resources.Requests[corev1.ResourceCPU]; ok {
		t.Errorf("requests %v: want none for what the app limits, so Kubernetes requests the limit", app.Resources.Requests)
	}
	if pod.Annotations["team"] != "ml" || pod.Annotations[AnnotationStatusSource] != "sidecar,proxy" {
		t.Errorf("annotations %v", pod.Annotations)
	}
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != sidecarContainer {
		t.Errorf("init containers %+v, want the sidecar", pod.Spec.InitContainers)
	}
	pod.Status.PodIP = "10.1.2.3"
	if inst := b.instance(pod); !inst.ProxyActivity || !strings.Contains(inst.StatusURL, ":7070/status") {
		t.Errorf("instance %+v, want the sidecar's status and the proxy", inst)
	}

	// The default app keeps the installation's settings.
	small, _ := c.Get("")
	pod = mustPodFor(t, b, specOf(messages.NewSessionID(), small))
	if pod.Spec.Containers[0].Image != "example/app:1" || pod.Spec.NodeSelector != nil || len(pod.Spec.InitContainers) != 0 ||
		pod.Annotations[AnnotationStatusSource] != "" || !pod.Spec.Containers[0].Resources.Limits.Memory().Equal(resource.MustParse("512Mi")) {
		t.Errorf("default app pod %+v", pod.Spec)
	}
	if inst := b.instance(pod); inst.ProxyActivity {
		t.Error("the default app's instance counts the proxy")
	}
}

func TestCheckAppRefusesABadPodTemplate(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte("apps:\n  a:\n    pod_template: {spec: {nodeSelectr: {}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(func(a catalog.App) error { return CheckApp(baseConfig(), a) })
	if err == nil || !strings.Contains(err.Error(), `catalog apps.yaml: app "a": field "pod_template"`) || !strings.Contains(err.Error(), "nodeSelectr") {
		t.Fatalf("err = %v", err)
	}
}
