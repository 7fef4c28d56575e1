package kube

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

func TestParseTemplate(t *testing.T) {
	bad := map[string]string{
		"unknown field":     "spec:\n  containerz: []\n",
		"wrong kind":        "kind: Deployment\n",
		"wrong apiVersion":  "apiVersion: apps/v1\nkind: Pod\n",
		"not yaml":          "spec: [\n",
		"app as init":       "spec:\n  initContainers:\n  - name: app\n",
		"bad quantity":      "spec:\n  containers:\n  - name: app\n    resources:\n      limits:\n        cpu: lots\n",
		"oversized":         "metadata:\n  annotations:\n    a: \"" + strings.Repeat("x", maxTemplateBytes) + "\"\n",
		"podtemplate typos": "kind: PodTemplate\ntemplate:\n  spek: {}\n",
	}
	for name, doc := range bad {
		if _, err := ParseTemplate([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	pod, err := ParseTemplate([]byte("kind: Pod\nmetadata:\n  name: ignored\nspec:\n  nodeName: n1\nstatus:\n  phase: Running\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != "n1" || pod.Status.Phase != "" {
		t.Errorf("parsed %+v", pod)
	}
	if _, err := LoadTemplate(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing template file was accepted")
	}
}

func FuzzParseTemplate(f *testing.F) {
	f.Add([]byte(gpuTemplate))
	f.Add([]byte("kind: PodTemplate\ntemplate:\n  spec:\n    containers:\n    - name: app\n"))
	f.Add([]byte("spec:\n  initContainers:\n  - name: sidecar\n    restartPolicy: Always\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := ParseTemplate(data)
		if err != nil {
			return
		}
		cfg := baseConfig()
		cfg.StatusSource, cfg.SidecarImage = "sidecar", "example/spawner:1"
		b := newTestBackend(t, cfg)
		b.template = tmpl
		id := messages.NewSessionID()
		pod := mustPodFor(t, b, provisioner.Spec{SessionID: id, Env: map[string]string{"A": "b"}})
		if pod.Name != ObjectName(id) || pod.Labels[LabelSessionID] != id || pod.Labels[LabelManagedBy] != ManagedBy ||
			pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.Containers[0].Name != appContainer {
			t.Fatalf("spawner's settings lost: %+v", pod.ObjectMeta)
		}
		if b.instance(pod).SessionID != id || b.serviceFor(pod).OwnerReferences[0].Name != pod.Name {
			t.Fatal("instance or service wrong")
		}
	})
}
