package main

import (
	"context"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	// leaseDuration mirrors the kubelet default; renewing at a quarter of it
	// keeps the node healthy even if a node-lifecycle controller is running.
	leaseDuration = 40 * time.Second
	leaseRenew    = 10 * time.Second
	// statusRenew is how often the Ready condition's heartbeat is refreshed.
	statusRenew = 30 * time.Second
	// kubeletVersion is what the node reports; it matches the control plane.
	kubeletVersion = "v1.37.2"
)

// node registers the simulated Node and keeps its lease and status fresh.
type node struct {
	client kubernetes.Interface
	name   string
}

func newNode(client kubernetes.Interface, name string) *node {
	return &node{client: client, name: name}
}

// labels are the well-known labels a kubelet sets; the pod loop matches
// nodeSelectors against them.
func (n *node) labels() map[string]string {
	return map[string]string{
		corev1.LabelHostname:   n.name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: runtime.GOARCH,
		"type":                 "fakelet",
	}
}

func (n *node) desiredStatus(now metav1.Time) corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("16"),
		corev1.ResourceMemory:           resource.MustParse("64Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "fakelet is posting ready status"),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "fakelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "fakelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "fakelet has sufficient PID available"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: n.name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "fakelet://" + kubeletVersion,
		},
	}
}

// register creates the Node, or takes over one left by an earlier run, and
// writes a Ready status so pods can be bound at once.
func (n *node) register(ctx context.Context) error {
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: n.labels()}}
	return wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 200 * time.Millisecond, Factor: 1.5, Steps: 20, Cap: 5 * time.Second},
		func(ctx context.Context) (bool, error) {
			_, err := n.client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.InfoS("Registering node failed, retrying", "node", n.name, "err", err)
				return false, nil
			}
			if err := n.updateStatus(ctx); err != nil {
				klog.InfoS("Writing node status failed, retrying", "node", n.name, "err", err)
				return false, nil
			}
			klog.InfoS("Node registered", "node", n.name)
			return true, nil
		})
}

func (n *node) updateStatus(ctx context.Context) error {
	cur, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	status := n.desiredStatus(metav1.Now())
	// Keep transition times of unchanged conditions, so they tell when the
	// node last changed state rather than when it last reported.
	for i, c := range status.Conditions {
		for _, old := range cur.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				status.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	cur.Status = status
	_, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node lease and status until ctx ends.
func (n *node) heartbeat(ctx context.Context) {
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := n.updateStatus(ctx); err != nil && ctx.Err() == nil {
			klog.InfoS("Node status heartbeat failed", "err", err)
		}
	}, statusRenew)
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := n.renewLease(ctx); err != nil && ctx.Err() == nil {
			klog.InfoS("Node lease renewal failed", "err", err)
		}
	}, leaseRenew)
}

func (n *node) renewLease(ctx context.Context) error {
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		nodeObj, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: n.name,
				// Owned by the Node, as the kubelet does, so deleting the
				// node cleans the lease up.
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: n.name, UID: nodeObj.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(n.name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}
