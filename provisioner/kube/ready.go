package kube

import (
	"context"
	"fmt"
	"strings"
	"time"

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
// own, until created is Ready and its /status says listening. It fails as
// soon as the pod shows it cannot start.
func (b *Backend) awaitReady(ctx context.Context, created *corev1.Pod, notify <-chan struct{}) (provisioner.Instance, error) {
	if err := b.waitSynced(ctx); err != nil {
		return provisioner.Instance{}, err
	}
	name := created.Name
	last := "not yet seen by the pod cache"
	var inst provisioner.Instance
	seen, ready := false, false
	for attempt := 0; ; {
		pod, err := b.lister.Pods(b.cfg.Namespace).Get(name)
		switch {
		case err == nil && pod.UID == created.UID:
			seen = true
			if why := podFailure(pod); why != "" {
				return provisioner.Instance{}, fmt.Errorf("pod %s: %s", name, why)
			}
			last = describe(pod)
			if !ready && podReady(pod) && (pod.Status.PodIP != "" || b.cfg.Route == RouteService) {
				ready, inst = true, b.instance(pod)
			}
		case err == nil || (apierrors.IsNotFound(err) && seen):
			return provisioner.Instance{}, fmt.Errorf("pod %s was deleted before it was ready", name)
		}
		var retry <-chan time.Time
		if ready && inst.StatusURL == "" {
			// No /status to ask: the pod's own readiness is the word.
			return inst, nil
		}
		if ready {
			ok, err := b.status.Listening(ctx, inst.StatusURL)
			if ok {
				return inst, nil
			}
			last = fmt.Sprintf("pod Ready, but %s does not say listening yet: %v", inst.StatusURL, err)
			retry = time.After(statusBackoff(attempt))
			attempt++
		}
		select {
		case <-notify:
		case <-retry:
		case <-ctx.Done():
			return provisioner.Instance{}, fmt.Errorf("pod %s: %w (last state: %s)", name, ctx.Err(), last)
		}
	}
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

// statusBackoff starts small because apps are often up within
// milliseconds of their pod turning Ready, and grows so that a slow one is
// not hammered.
func statusBackoff(attempt int) time.Duration {
	return min(5*time.Millisecond<<min(attempt, 5), 100*time.Millisecond)
}
