package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/spawnerhq/spawner/messages"
)

// RESTConfig is the client configuration the backend uses for cfg, for
// tools that check access the way the backend will use it.
func RESTConfig(cfg Config) (*rest.Config, error) { return restConfig(cfg) }

// restConfig is the in-cluster config inside a pod, else the kubeconfig.
// It sets no client-wide timeout: that would also cut the informer's
// long-running watch, so each call carries its own deadline instead.
func restConfig(cfg Config) (*rest.Config, error) {
	var rc *rest.Config
	if cfg.Kubeconfig == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			rc = c
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster kubernetes config: %w", err)
		}
	}
	if rc == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = cfg.Kubeconfig
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes config (not in a pod, so from the kubeconfig): %w", err)
		}
		rc = c
	}
	if cfg.QPS > 0 {
		rc.QPS = cfg.QPS
	}
	if cfg.Burst > 0 {
		rc.Burst = cfg.Burst
	} else if rc.QPS > 0 {
		rc.Burst = max(int(2*rc.QPS), 10)
	}
	rc.UserAgent = "spawner-provisioner"
	return rc, nil
}

// apiBackoff spaces the retries of one call; with APITimeout bounding the
// whole call, a blip is ridden out and an outage still fails in seconds.
var apiBackoff = wait.Backoff{Steps: 5, Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.2}

// call runs fn with retries on transient errors, all within APITimeout,
// and marks the error unavailable when the API server could not answer.
func (b *Backend) call(ctx context.Context, what string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	defer cancel()
	err := retry.OnError(apiBackoff, func(err error) bool { return ctx.Err() == nil && transient(err) }, func() error {
		return fn(ctx)
	})
	if err == nil {
		return nil
	}
	if transient(err) {
		return fmt.Errorf("%s: %w", what, &unavailableError{err: err})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// transient reports errors worth retrying: the API server was unreachable,
// overloaded or timed out, as opposed to having refused the request.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsInternalError(err) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || utilnet.IsConnectionRefused(err) ||
		utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) {
		return true
	}
	var ne net.Error // *url.Error: the request never got an HTTP answer.
	return errors.As(err, &ne)
}

// unavailableError marks an API server that could not be reached. It
// converts to a messages.Error with CodeUnavailable, so the gateway
// answers 503 rather than blaming the spawn.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string {
	return "the Kubernetes API server is unavailable: " + e.err.Error()
}

func (e *unavailableError) Unwrap() error { return e.err }

// As lets errors.As find a *messages.Error with CodeUnavailable.
func (e *unavailableError) As(target any) bool {
	if t, ok := target.(**messages.Error); ok {
		*t = &messages.Error{Code: messages.CodeUnavailable, Message: e.Error()}
		return true
	}
	return false
}

// createPod creates pod, retrying transient errors. A retry that finds
// the pod already there adopts it if it is this session's.
func (b *Backend) createPod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	pods := b.client.Pods(b.cfg.Namespace)
	id := pod.Labels[LabelSessionID]
	var created *corev1.Pod
	// Only an answer from the API server, or a refused connection, proves
	// nothing was created; a timeout may hide a pod that exists.
	maybeCreated := false
	err := b.call(ctx, "create pod "+pod.Name, func(ctx context.Context) error {
		p, err := pods.Create(ctx, pod, metav1.CreateOptions{FieldManager: fieldManager})
		if apierrors.IsAlreadyExists(err) && maybeCreated {
			p, err = pods.Get(ctx, pod.Name, metav1.GetOptions{})
			if err == nil && p.Labels[LabelSessionID] != id {
				return fmt.Errorf("pod %s exists and is not this session's", pod.Name)
			}
		}
		if err != nil && transient(err) && !utilnet.IsConnectionRefused(err) {
			maybeCreated = true
		}
		created = p
		return err
	})
	if err != nil {
		if !maybeCreated {
			b.mu.Lock()
			b.absent[id] = true
			b.mu.Unlock()
		}
		return nil, err
	}
	return created, nil
}

func (b *Backend) createService(ctx context.Context, svc *corev1.Service) error {
	services := b.client.Services(b.cfg.Namespace)
	return b.call(ctx, "create service "+svc.Name, func(ctx context.Context) error {
		_, err := services.Create(ctx, svc, metav1.CreateOptions{FieldManager: fieldManager})
		if apierrors.IsAlreadyExists(err) {
			// An earlier attempt of this call got through.
			return nil
		}
		return err
	})
}

// deleteBackground deletes at once and leaves dependents to the garbage
// collector, which removes the Service with its Pod.
func deleteBackground() metav1.DeleteOptions {
	policy := metav1.DeletePropagationBackground
	return metav1.DeleteOptions{PropagationPolicy: &policy}
}

const fieldManager = "spawner"
