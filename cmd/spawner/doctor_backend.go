package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	dockerclient "github.com/docker/docker/client"
	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"

	"github.com/spawnerhq/spawner/provisioner/kube"
)

// checkDocker pings the engine the docker backend would use, found the
// way the docker CLI finds it (DOCKER_HOST, else the local socket).
func checkDocker(ctx context.Context) checkResult {
	const name = "docker"
	cli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return failed(name, err.Error(), "check DOCKER_HOST, DOCKER_CERT_PATH and DOCKER_TLS_VERIFY")
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ping, err := cli.Ping(ctx)
	if err != nil {
		return failed(name, fmt.Sprintf("the engine at %s does not answer: %v", cli.DaemonHost(), err),
			"start Docker, or give this user access to its socket (the docker group), or set DOCKER_HOST")
	}
	return pass(name, fmt.Sprintf("the engine at %s answers (API %s)", cli.DaemonHost(), ping.APIVersion))
}

// kubeAccess is what the provisioner does in its namespace, as the Role
// in deploy/rbac.yaml grants it; a test keeps the two the same.
var kubeAccess = []struct {
	resource, subresource string
	verbs                 []string
}{
	{"pods", "", []string{"get", "list", "watch", "create", "delete"}},
	{"pods", "status", []string{"get"}},
	{"services", "", []string{"create", "delete"}},
}

// checkKube reaches the API server with the backend's configuration and
// asks, with SelfSubjectAccessReviews, whether this identity may do what
// the provisioner does in SPAWNER_NAMESPACE.
func checkKube(ctx context.Context, cfg kube.Config) []checkResult {
	const name = "kubernetes"
	rc, err := kube.RESTConfig(cfg)
	if err != nil {
		return []checkResult{failed(name, err.Error(), "set SPAWNER_KUBECONFIG or KUBECONFIG, or run inside the cluster")}
	}
	rc.Timeout = 5 * time.Second
	// A client of authorization/v1 alone: client-go's clientset would link
	// every API group into the binary.
	client, params, err := kube.NewRESTClient(rc, authv1.SchemeGroupVersion, authv1.AddToScheme)
	if err != nil {
		return []checkResult{failed(name, err.Error(), "check the kubeconfig")}
	}
	reviews := gentype.NewClient[*authv1.SelfSubjectAccessReview]("selfsubjectaccessreviews", client, params, "",
		func() *authv1.SelfSubjectAccessReview { return &authv1.SelfSubjectAccessReview{} })
	v, err := serverVersion(ctx, client)
	if err != nil {
		return []checkResult{failed(name, fmt.Sprintf("the API server at %s does not answer: %v", rc.Host, err),
			"check that the cluster is up and the kubeconfig's server and credentials are right")}
	}
	results := []checkResult{pass(name, fmt.Sprintf("the API server at %s answers (%s)", rc.Host, v.GitVersion))}
	var denied []string
	for _, a := range kubeAccess {
		for _, verb := range a.verbs {
			review := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authv1.ResourceAttributes{
					Namespace: cfg.Namespace, Verb: verb, Resource: a.resource, Subresource: a.subresource,
				},
			}}
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep, err := reviews.Create(callCtx, review, metav1.CreateOptions{})
			cancel()
			what := verb + " " + a.resource
			if a.subresource != "" {
				what += "/" + a.subresource
			}
			if err != nil {
				return append(results, failed("rbac", "cannot ask the API server about access: "+err.Error(), "check the API server's authorization settings"))
			}
			if !rep.Status.Allowed {
				denied = append(denied, what)
			}
		}
	}
	if len(denied) > 0 {
		return append(results, failed("rbac", fmt.Sprintf("in namespace %s this identity may not: %s", cfg.Namespace, strings.Join(denied, ", ")),
			"apply deploy/rbac.yaml's Role and RoleBinding in "+cfg.Namespace+" and run the provisioner as its service account"))
	}
	return append(results, pass("rbac", "the provisioner's access to pods and services in namespace "+cfg.Namespace))
}

// serverVersion asks the API server for its version, as client-go's
// discovery client does.
func serverVersion(ctx context.Context, client *rest.RESTClient) (*version.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := client.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return nil, err
	}
	var v version.Info
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("the API server's version: %w", err)
	}
	return &v, nil
}
