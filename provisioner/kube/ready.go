package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/spawnerhq/spawner/provisioner"
)

// fatalWaiting are the waiting reasons after which a pod will not become
// ready within a spawn timeout without someone fixing something.
var fatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CrashLoopBackOff": true, "CreateContainerConfigError": true, "CreateContainerError": true,
	"RunContainerError": true,
}

// awaitReady waits, on the informer's wake-ups rather than a watch of its
// own, until created is Ready, and then until its /status says listening.
// It fails as soon as the pod shows it cannot start.
func (b *Backend) awaitReady(ctx context.Context, created *corev1.Pod, notify <-chan struct{}) (provisioner.Instance, error) {
	if err := b.waitSynced(ctx); err != nil {
		return provisioner.Instance{}, err
	}
	inst, err := b.awaitPodReady(ctx, created, notify)
	if err != nil || inst.StatusURL == "" {
		// With no /status to ask, the pod's own readiness is the word.
		return inst, err
	}
	return inst, b.awaitListening(ctx, created, inst.StatusURL, notify)
}

// awaitPodReady waits until created is Ready and addressable.
func (b *Backend) awaitPodReady(ctx context.Context, created *corev1.Pod, notify <-chan struct{}) (provisioner.Instance, error) {
	last := "not yet seen by the pod cache"
	seen := false
	for {
		pod, err := b.lister.Pods(b.cfg.Namespace).Get(created.Name)
		switch {
		case err == nil && pod.UID == created.UID:
			seen = true
			if why := podFailure(pod); why != "" {
				return provisioner.Instance{}, fmt.Errorf("pod %s: %s", created.Name, why)
			}
			last = describe(pod)
			if podReady(pod) && (pod.Status.PodIP != "" || b.cfg.Route == RouteService) {
				return b.instance(pod), nil
			}
		case err == nil || (apierrors.IsNotFound(err) && seen):
			return provisioner.Instance{}, fmt.Errorf("pod %s was deleted before it was ready", created.Name)
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return provisioner.Instance{}, fmt.Errorf("pod %s: %w (last state: %s)", created.Name, ctx.Err(), last)
		}
	}
}

// awaitListening polls the Ready pod's /status with the provisioner's
// shared readiness wait, while the informer's wake-ups still catch a pod
// that fails or is deleted meanwhile.
func (b *Backend) awaitListening(ctx context.Context, created *corev1.Pod, statusURL string, notify <-chan struct{}) error {
	gone := make(chan error, 1)
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-notify:
			}
			if err := b.podGone(created); err != nil {
				gone <- err
				return
			}
		}
	}()
	why, err := provisioner.AwaitReady(ctx, b.status, statusURL, "", gone)
	switch {
	case errors.Is(err, provisioner.ErrExited):
		return why
	case err != nil:
		return fmt.Errorf("pod %s: Ready, but %s does not say listening yet: %w", created.Name, statusURL, err)
	}
	return nil
}

// podGone says why created can no longer become ready, or nil.
func (b *Backend) podGone(created *corev1.Pod) error {
	pod, err := b.lister.Pods(b.cfg.Namespace).Get(created.Name)
	switch {
	case err == nil && pod.UID == created.UID:
		if why := podFailure(pod); why != "" {
			return fmt.Errorf("pod %s: %s", created.Name, why)
		}
		return nil
	case err == nil || apierrors.IsNotFound(err):
		return fmt.Errorf("pod %s was deleted before it was ready", created.Name)
	}
	return nil
}

// podFailure says why pod cannot become ready, or "" while it still may.
func podFailure(pod *corev1.Pod) string {
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return "ended before it was ready: " + podEnded(pod)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return "Unschedulable: " + c.Message
		}
	}
	sidecars := map[string]bool{}
	for _, ct := range pod.Spec.InitContainers {
		sidecars[ct.Name] = ct.RestartPolicy != nil && *ct.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}
	check := func(cs corev1.ContainerStatus, init bool) string {
		if w := cs.State.Waiting; w != nil && fatalWaiting[w.Reason] {
			return fmt.Sprintf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
		}
		t := cs.State.Terminated
		if t == nil || (init && !sidecars[cs.Name] && t.ExitCode == 0) {
			return ""
		}
		msg := fmt.Sprintf("container %s terminated with exit code %d", cs.Name, t.ExitCode)
		if t.Reason != "" {
			msg += " (" + t.Reason + ")"
		}
		if t.Message != "" {
			msg += ": " + t.Message
		}
		return msg
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if why := check(cs, true); why != "" {
			return why
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if why := check(cs, false); why != "" {
			return why
		}
	}
	return ""
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// describe summarises a pod's state for a timeout's message.
func describe(pod *corev1.Pod) string {
	parts := []string{string(pod.Status.Phase)}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Reason != "" {
			parts = append(parts, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, c.Reason))
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			parts = append(parts, fmt.Sprintf("container %s waiting: %s", cs.Name, w.Reason))
		}
	}
	if len(parts) == 1 && parts[0] == "" {
		return "no status yet"
	}
	return strings.Join(parts, ", ")
}
