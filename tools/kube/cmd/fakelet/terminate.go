package main

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// terminate stops a deleted pod's processes within its grace period (capped
// by --max-grace) and then confirms the deletion, which the apiserver waits
// for on pods bound to a node.
func (c *podController) terminate(key string, pod *corev1.Pod) {
	c.mu.Lock()
	run := c.runs[key]
	if run != nil && run.terminating {
		c.mu.Unlock()
		return
	}
	if run != nil {
		run.terminating = true
	}
	c.mu.Unlock()

	grace := c.cfg.maxGrace
	if s := pod.DeletionGracePeriodSeconds; s != nil && time.Duration(*s)*time.Second < grace {
		grace = time.Duration(*s) * time.Second
	}
	uid := pod.UID
	c.runGroup.Start(func() {
		c.stopRun(key, uid, grace)
		// Grace period 0 with a UID precondition removes exactly this pod;
		// if finalizers remain, the apiserver keeps it until they are gone.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := c.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			klog.InfoS("Confirming pod deletion failed", "pod", key, "err", err)
			c.mu.Lock()
			if r := c.runs[key]; r != nil {
				r.terminating = false
			}
			c.mu.Unlock()
			c.queue.AddRateLimited(key)
			return
		}
		klog.InfoS("Pod terminated", "pod", key)
	})
}

// stopRun stops the processes of the pod at key (if uid is empty, whatever
// pod is there), and frees its address.
func (c *podController) stopRun(key string, uid types.UID, grace time.Duration) {
	c.mu.Lock()
	run := c.runs[key]
	if run == nil || (uid != "" && run.uid != uid) {
		c.mu.Unlock()
		return
	}
	delete(c.runs, key)
	c.ips.release(run.ip)
	c.mu.Unlock()

	run.cancel()
	var wg sync.WaitGroup
	for _, ct := range run.containers {
		wg.Go(func() { ct.stop(grace) })
	}
	wg.Wait()
}

// shutdown kills every process, without waiting for grace periods: the
// fakelet is going away and nothing may outlive it.
func (c *podController) shutdown() {
	c.mu.Lock()
	runs := c.runs
	c.runs = map[string]*podRun{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runs {
		r.cancel()
		for _, ct := range r.containers {
			wg.Go(func() { ct.stop(200 * time.Millisecond) })
		}
	}
	wg.Wait()
	c.runGroup.Wait()
}
