package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestKubeDeployManifests has the API server validate and admit every
// manifest of deploy/ without creating anything. deploy/ names the
// namespace "spawner", which a server-side dry run cannot create before
// the objects inside it, so an overlay moves them into the test's own.
func TestKubeDeployManifests(t *testing.T) {
	kc := kubeconfigPath(t)
	kubectl := kubectlPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	// Warn about anything that breaks the restricted Pod Security level,
	// which every workload of deploy/ is meant to meet.
	patch := []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/warn":"restricted"}}}`)
	if _, err := client.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	deploy, err := filepath.Abs("../deploy")
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, deploy)
	if err != nil {
		t.Fatal(err)
	}
	kustomization := "resources:\n- " + rel + "\nnamespace: " + ns + "\n" +
		// The test's namespace exists already, without deploy/'s labels.
		"patches:\n- target:\n    kind: Namespace\n  patch: |\n    $patch: delete\n    apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: spawner\n"
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kc}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	built, _ := run("kustomize", deploy)
	for _, want := range []string{"kind: Namespace", "kind: Role", "kind: RoleBinding", "kind: StatefulSet", "kind: NetworkPolicy"} {
		if !strings.Contains(built, want) {
			t.Errorf("deploy/ builds no %s", want)
		}
	}

	out, warnings := run("apply", "--dry-run=server", "-k", overlay, "-o", "name")
	t.Logf("dry run:\n%s%s", out, warnings)
	for _, want := range []string{
		"serviceaccount/spawner-provisioner", "role.rbac.authorization.k8s.io/spawner-sessions",
		"rolebinding.rbac.authorization.k8s.io/spawner-provisioner", "configmap/spawner-config",
		"secret/spawner-api-tokens", "service/spawner-gateway", "service/spawner-nats",
		"deployment.apps/spawner-gateway", "deployment.apps/spawner-provisioner", "deployment.apps/spawner-prober",
		"deployment.apps/spawner-reaper", "statefulset.apps/spawner-nats",
		"networkpolicy.networking.k8s.io/spawner-sessions", "networkpolicy.networking.k8s.io/spawner-nats",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("the dry run did not accept %s", want)
		}
	}
	if !strings.Contains(out, "configmap/spawner-session-template-") {
		t.Error("the dry run did not accept the session template ConfigMap")
	}
	if strings.Contains(warnings, "PodSecurity") {
		t.Errorf("a workload breaks the restricted Pod Security level:\n%s", warnings)
	}

	// The provisioner's Role allows pods and services in its namespace
	// and nothing more.
	rules, _ := run("kustomize", deploy)
	role := rules[strings.Index(rules, "kind: Role\n"):]
	role = role[:strings.Index(role, "---")]
	for _, forbidden := range []string{"secrets", "\"*\"", "- '*'", "deployments", "nodes"} {
		if strings.Contains(role, forbidden) {
			t.Errorf("the Role mentions %s:\n%s", forbidden, role)
		}
	}
}
