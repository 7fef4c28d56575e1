package integration

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/kube"
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
	// The test's namespace exists already, without deploy/'s labels.
	overlay := kustomizeOverlay(t, ns)

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

// TestKubeProvisionerRoleSuffices runs the backend with the token of
// deploy/'s provisioner ServiceAccount: its Role must allow a whole
// session's life, and nothing outside its namespace or beyond pods and
// services.
func TestKubeProvisionerRoleSuffices(t *testing.T) {
	kc := kubeconfigPath(t)
	kubectl := kubectlPath(t)
	admin := kubeClient(t, kc)
	ns := kubeNamespace(t, admin)
	overlay := kustomizeOverlay(t, ns)
	built, err := exec.Command(kubectl, "kustomize", overlay).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	var rbac []string
	for _, doc := range strings.Split(string(built), "\n---\n") {
		if strings.Contains(doc, "\nkind: ServiceAccount\n") || strings.Contains(doc, "\nkind: Role\n") || strings.Contains(doc, "\nkind: RoleBinding\n") {
			rbac = append(rbac, doc)
		}
	}
	apply := exec.Command(kubectl, "--kubeconfig", kc, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(strings.Join(rbac, "\n---\n"))
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("apply RBAC: %v\n%s", err, out)
	}

	ctx := context.Background()
	tok, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "spawner-provisioner", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	rc = rest.AnonymousClientConfig(rc)
	rc.BearerToken = tok.Status.Token
	sa, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	// The backend's own client, as the provisioner builds it.
	be, err := kube.NewWithConfig(settings.Overlay(kube.Config{Namespace: ns, Image: "spawner:latest", Route: kube.RoutePodIP}), rc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = be.Run(runCtx, make(chan provisioner.Exit, 8)) }()
	id := messages.NewSessionID()
	startCtx, done := context.WithTimeout(ctx, 30*time.Second)
	defer done()
	if _, err := be.Start(startCtx, provisioner.Spec{SessionID: id}); err != nil {
		t.Fatalf("Start as the provisioner's ServiceAccount: %v", err)
	}
	if list, err := be.List(ctx); err != nil || len(list) != 1 {
		t.Errorf("List as the provisioner's ServiceAccount: %v %v", list, err)
	}
	if err := be.Stop(ctx, id); err != nil {
		t.Errorf("Stop as the provisioner's ServiceAccount: %v", err)
	}
	awaitGone(t, admin, ns, id)

	// And nothing more.
	if _, err := sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing pods of another namespace: %v, want forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets: %v, want forbidden", err)
	}
	patch := []byte(`{"metadata":{"labels":{"x":"y"}}}`)
	if _, err := sa.CoreV1().ServiceAccounts(ns).Patch(ctx, "default", types.MergePatchType, patch, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("patching a ServiceAccount: %v, want forbidden", err)
	}
}

// kustomizeOverlay writes a kustomization that puts deploy/ into ns, less
// its Namespace object, and returns its directory.
func kustomizeOverlay(t *testing.T, ns string) string {
	t.Helper()
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
		"patches:\n- target:\n    kind: Namespace\n  patch: |\n    $patch: delete\n    apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: spawner\n"
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}
	return overlay
}
