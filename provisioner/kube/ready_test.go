package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodFailure(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	waiting := func(reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "m"}}}
	}
	terminated := func(name string, code int32) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error"}}}
	}
	cases := []struct {
		name string
		pod  corev1.Pod
		want string // "" means no failure
	}{
		{"creating", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ContainerCreating")}}}, ""},
		{"image pull", corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ErrImagePull")}}}, "ErrImagePull"},
		{"image backoff", corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff")}}}, "ImagePullBackOff"},
		{"crash loop", corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("CrashLoopBackOff")}}}, "CrashLoopBackOff"},
		{"unschedulable", corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available"}}}}, "Unschedulable: 0/3 nodes"},
		{"app exited", corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{terminated("app", 2)}}}, "exit code 2"},
		{"pod failed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}, "Failed (Evicted)"},
		{"init done", corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "setup"}}},
			Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{terminated("setup", 0)}}}, ""},
		{"init failed", corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "setup"}}},
			Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{terminated("setup", 1)}}}, "container setup terminated"},
		{"sidecar ended", corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "sidecar", RestartPolicy: &always}}},
			Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{terminated("sidecar", 0)}}}, "container sidecar terminated"},
	}
	for _, c := range cases {
		got := podFailure(&c.pod)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: podFailure = %q, want %q", c.name, got, c.want)
		}
	}
}
