package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// watch registers the Start of session id for wake-ups on its pod's
// changes, and marks it as starting so that its failures are Start's to
// report, not the exits channel's.
func (b *Backend) watch(id string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	b.waiters[id] = ch
	b.mu.Unlock()
	return ch
}

func (b *Backend) unwatch(id string) {
	b.mu.Lock()
	delete(b.waiters, id)
	b.mu.Unlock()
}

// onPod handles every informer event: it wakes the Start waiting on the
// pod, and reports pods that end or are deleted.
func (b *Backend) onPod(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Labels[LabelManagedBy] != ManagedBy {
		return
	}
	id := pod.Labels[LabelSessionID]
	if !messages.ValidSessionID(id) || pod.Name != ObjectName(id) {
		return
	}
	uid := string(pod.UID)
	b.mu.Lock()
	if ch := b.waiters[id]; ch != nil {
		select {
		case ch <- struct{}{}:
		default: // A wake-up is already pending; Start reads the latest state.
		}
	}
	// A pod that ends while its Start waits is Start's to report. Every
	// other end is reported, a Stop's too: the provisioner tells those
	// from the session's record.
	_, starting := b.waiters[id]
	var exit *provisioner.Exit
	switch {
	case deleted:
		if !starting && !b.reported[uid] {
			exit = &provisioner.Exit{SessionID: id, Reason: messages.ReasonLost, Detail: fmt.Sprintf("pod %s was deleted", pod.Name)}
		}
		delete(b.reported, uid)
	case starting || b.reported[uid]:
	case pod.DeletionTimestamp != nil:
		b.reported[uid] = true
		exit = &provisioner.Exit{SessionID: id, Reason: messages.ReasonLost, Detail: fmt.Sprintf("pod %s is being deleted", pod.Name)}
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		b.reported[uid] = true
		exit = &provisioner.Exit{SessionID: id, Reason: messages.ReasonExited, Detail: "pod " + pod.Name + " " + podEnded(pod)}
	}
	exits, done := b.exits, b.done
	b.mu.Unlock()
	if exit == nil || exits == nil {
		return
	}
	b.log.Info("pod ended", "session_id", id, "reason", exit.Reason, "detail", exit.Detail)
	select {
	case exits <- *exit:
	case <-done:
	}
}

// podEnded describes a pod in a terminal phase, with the app's exit.
func podEnded(pod *corev1.Pod) string {
	out := string(pod.Status.Phase)
	if pod.Status.Reason != "" {
		out += " (" + pod.Status.Reason + ")"
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && cs.Name == appContainer {
			out += fmt.Sprintf(": container %s exited with code %d", cs.Name, t.ExitCode)
			if t.Reason != "" {
				out += " (" + t.Reason + ")"
			}
		}
	}
	return out
}
