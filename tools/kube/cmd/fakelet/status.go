package main

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// nodeIP is the host IP every pod reports: the node is this machine.
	nodeIP = "127.0.0.1"
	// imagePullDelay is how long a simulated pull failure reports
	// ErrImagePull before it turns into ImagePullBackOff.
	imagePullDelay = time.Second
)

// desiredStatus computes the pod status the kubelet would report for run. It
// starts from the current status so that fields the fakelet does not own
// (qosClass, the PodScheduled condition the binding wrote) stay as they are.
func (c *podController) desiredStatus(pod *corev1.Pod, run *podRun, sim string) corev1.PodStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := *pod.Status.DeepCopy()
	st.ObservedGeneration = pod.Generation
	st.HostIP, st.HostIPs = nodeIP, []corev1.HostIP{{IP: nodeIP}}
	st.PodIP, st.PodIPs = run.ip.String(), []corev1.PodIP{{IP: run.ip.String()}}
	st.StartTime = &run.startTime
	st.Reason, st.Message = "", ""

	waiting, waitingMsg := "", ""
	switch {
	case run.configErr != "":
		waiting, waitingMsg = "CreateContainerConfigError", run.configErr
	case sim == simImagePull && now().Sub(run.startTime.Time) < imagePullDelay:
		waiting, waitingMsg = "ErrImagePull", "simulated image pull failure"
	case sim == simImagePull:
		waiting, waitingMsg = "ImagePullBackOff", "Back-off pulling image (simulated)"
	}

	// The pod is over once every container that runs a process has exited.
	ran, exited, failed := 0, 0, false
	for i := range pod.Spec.Containers {
		if rc := run.containers[pod.Spec.Containers[i].Name]; rc != nil && rc.cmd != nil {
			ran++
			if rc.exited {
				exited++
				failed = failed || rc.exitCode != 0
			}
		}
	}
	terminal := ran > 0 && exited == ran

	status := func(ct *corev1.Container, init bool) corev1.ContainerStatus {
		cs := corev1.ContainerStatus{Name: ct.Name, Image: ct.Image, ImageID: "fakelet://" + ct.Image}
		id := fmt.Sprintf("fakelet://%s/%s", pod.UID, ct.Name)
		rc := run.containers[ct.Name]
		switch {
		case waiting != "" || rc == nil:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting, Message: waitingMsg}
		case sim == simCrashLoop:
			cs.State.Waiting = &corev1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off 10s restarting failed container=%s pod=%s_%s(%s)", ct.Name, pod.Name, pod.Namespace, pod.UID),
			}
			cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", StartedAt: run.startTime, FinishedAt: run.startTime, ContainerID: id,
			}
			cs.RestartCount = 1
			cs.ContainerID = id
		case init && !isSidecar(pod, ct.Name), rc.cmd == nil && terminal:
			// Init containers and placeholders finish as soon as they start.
			cs.State.Terminated = &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: rc.startedAt, FinishedAt: rc.startedAt, ContainerID: id,
			}
			cs.Ready = init // a completed init container counts as ready
			cs.ContainerID = id
		case rc.exited:
			reason := "Completed"
			if rc.exitCode != 0 {
				reason = "Error"
			}
			cs.State.Terminated = &corev1.ContainerStateTerminated{
				ExitCode: rc.exitCode, Reason: reason, StartedAt: rc.startedAt, FinishedAt: rc.finishedAt, ContainerID: id,
			}
			cs.ContainerID = id
		default:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: rc.startedAt}
			cs.Ready = rc.ready
			cs.ContainerID = id
		}
		started := cs.State.Running != nil
		cs.Started = &started
		return cs
	}

	var unready []string
	st.InitContainerStatuses = nil
	for i := range pod.Spec.InitContainers {
		ct := &pod.Spec.InitContainers[i]
		cs := status(ct, true)
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		if isSidecar(pod, ct.Name) && !cs.Ready {
			unready = append(unready, ct.Name)
		}
	}
	st.ContainerStatuses = nil
	for i := range pod.Spec.Containers {
		cs := status(&pod.Spec.Containers[i], false)
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			unready = append(unready, cs.Name)
		}
	}

	switch {
	case terminal && failed:
		st.Phase = corev1.PodFailed
	case terminal:
		st.Phase = corev1.PodSucceeded
	case waiting != "":
		st.Phase = corev1.PodPending
	default:
		st.Phase = corev1.PodRunning
	}

	gen := pod.Generation
	ready, reason, msg := len(unready) == 0, "", ""
	if terminal {
		ready, reason = false, "PodCompleted"
	} else if !ready {
		reason, msg = "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	setCondition(&st, corev1.PodReadyToStartContainers, !terminal, "", "", gen)
	setCondition(&st, corev1.PodInitialized, true, "", "", gen)
	setCondition(&st, corev1.ContainersReady, ready, reason, msg, gen)
	podReady, podReason, podMsg := ready, reason, msg
	for _, g := range pod.Spec.ReadinessGates {
		if !conditionTrue(pod, g.ConditionType) && podReady {
			podReady, podReason = false, "ReadinessGatesNotReady"
			podMsg = fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist or is not True", g.ConditionType)
		}
	}
	setCondition(&st, corev1.PodReady, podReady, podReason, podMsg, gen)
	setCondition(&st, corev1.PodScheduled, true, "", "", gen)
	return st
}

// unschedulableStatus is what kube-scheduler reports for a pod it cannot place.
func unschedulableStatus(pod *corev1.Pod, msg string) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.ObservedGeneration = pod.Generation
	st.Phase = corev1.PodPending
	setCondition(&st, corev1.PodScheduled, false, corev1.PodReasonUnschedulable, msg, pod.Generation)
	return st
}

// setCondition sets a condition, keeping its transition time while its
// status does not change.
func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason, msg string, gen int64) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	cond := corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now()}
	for i, old := range st.Conditions {
		if old.Type == t {
			if old.Status == status {
				cond.LastTransitionTime = old.LastTransitionTime
			}
			cond.LastProbeTime = old.LastProbeTime
			st.Conditions[i] = cond
			return
		}
	}
	st.Conditions = append(st.Conditions, cond)
}

func conditionTrue(pod *corev1.Pod, t corev1.PodConditionType) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// isSidecar reports whether name is a native sidecar: an init container that
// keeps running (restartPolicy Always).
func isSidecar(pod *corev1.Pod, name string) bool {
	for _, ct := range pod.Spec.InitContainers {
		if ct.Name == name {
			return ct.RestartPolicy != nil && *ct.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return false
}

// allContainers lists init containers then regular ones, pointing into pod.
func allContainers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// appSpec is the container that runs the app: the one named app, else the
// first one.
func appSpec(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == appContainer {
			return &pod.Spec.Containers[i]
		}
	}
	return &pod.Spec.Containers[0]
}

// firstPort is the container's first containerPort, or 0.
func firstPort(ct *corev1.Container) int {
	if len(ct.Ports) == 0 {
		return 0
	}
	return int(ct.Ports[0].ContainerPort)
}
