package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// fakeClient is client-go's fake clientset as the backend's Client. Its
// IsWatchListSemanticsUnSupported tells the informer to list first.
type fakeClient struct{ *fake.Clientset }

func (f fakeClient) Pods(namespace string) PodClient { return f.CoreV1().Pods(namespace) }

func (f fakeClient) Services(namespace string) ServiceClient { return f.CoreV1().Services(namespace) }

// cluster is a backend on a fake clientset with its informer running. The
// test plays the kubelet by writing pod status.
type cluster struct {
	b      *Backend
	client *fake.Clientset
	exits  chan provisioner.Exit
}

func startCluster(t *testing.T, cfg Config) *cluster {
	t.Helper()
	client := fake.NewClientset()
	var uids atomic.Int64
	// The fake assigns no UIDs; owner references need them.
	client.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if obj, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object); ok && obj.GetUID() == "" {
			obj.SetUID(types.UID(fmt.Sprintf("uid-%d", uids.Add(1))))
		}
		return false, nil, nil
	})
	b, err := NewWithClient(cfg, fakeClient{client}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &cluster{b: b, client: client, exits: make(chan provisioner.Exit, 16)}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, c.exits) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := b.waitSynced(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// kubelet waits for the session's pod and then applies set to its status.
func (c *cluster) kubelet(t *testing.T, id string, set func(*corev1.PodStatus)) {
	t.Helper()
	pods := c.client.CoreV1().Pods("spawner")
	for range 500 {
		pod, err := pods.Get(t.Context(), ObjectName(id), metav1.GetOptions{})
		if err == nil {
			set(&pod.Status)
			if _, err := pods.UpdateStatus(t.Context(), pod, metav1.UpdateOptions{}); err != nil {
				t.Errorf("update status: %v", err)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("pod of %s never appeared", id)
}

// running marks a pod Running and Ready at ip.
func running(ip string) func(*corev1.PodStatus) {
	return func(st *corev1.PodStatus) {
		st.Phase, st.PodIP = corev1.PodRunning, ip
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	}
}

// statusServer serves /status on loopback; listening reports what to say
// on each call.
func statusServer(t *testing.T, listening func(call int) bool) (port int, calls *atomic.Int64) {
	t.Helper()
	calls = &atomic.Int64{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		fmt.Fprintf(w, `{"active_connections":0,"seconds_inactive":0,"listening":%t}`, listening(int(n)))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, calls
}

func (c *cluster) objects(t *testing.T, id string) (pod, svc bool) {
	t.Helper()
	_, errP := c.client.CoreV1().Pods("spawner").Get(t.Context(), ObjectName(id), metav1.GetOptions{})
	_, errS := c.client.CoreV1().Services("spawner").Get(t.Context(), ObjectName(id), metav1.GetOptions{})
	for _, err := range []error{errP, errS} {
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	return errP == nil, errS == nil
}

func (c *cluster) noExit(t *testing.T) {
	t.Helper()
	select {
	case e := <-c.exits:
		t.Errorf("unexpected exit %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

func podIPConfig(port int) Config {
	cfg := baseConfig()
	cfg.Route, cfg.Port = RoutePodIP, port
	return cfg
}

func TestStartReadyListStop(t *testing.T) {
	port, calls := statusServer(t, func(call int) bool { return call >= 3 })
	c := startCluster(t, podIPConfig(port))
	id := messages.NewSessionID()
	go c.kubelet(t, id, running("127.0.0.1"))
	inst, err := c.b.Start(t.Context(), provisioner.Spec{SessionID: id, URL: "http://x/p/" + id + "/"})
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1:" + strconv.Itoa(port)
	if inst.SessionID != id || inst.Upstream != want || inst.StatusURL != "http://"+want+"/status" {
		t.Errorf("instance %+v, want upstream %s", inst, want)
	}
	if n := calls.Load(); n < 3 {
		t.Errorf("Start returned after %d /status calls, before one said listening", n)
	}
	pod, err := c.client.CoreV1().Pods("spawner").Get(t.Context(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := c.client.CoreV1().Services("spawner").Get(t.Context(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if refs := svc.OwnerReferences; len(refs) != 1 || refs[0].UID != pod.UID || pod.UID == "" {
		t.Errorf("service owner %+v, pod uid %s", refs, pod.UID)
	}
	list, err := c.b.List(t.Context())
	if err != nil || len(list) != 1 || list[0].SessionID != id || list[0].Upstream != want {
		t.Errorf("List = %+v, %v", list, err)
	}

	// A second spawn shows that readiness comes from the shared informer:
	// no spawn opens a watch of its own.
	second := messages.NewSessionID()
	go c.kubelet(t, second, running("127.0.0.1"))
	if _, err := c.b.Start(t.Context(), provisioner.Spec{SessionID: second}); err != nil {
		t.Fatal(err)
	}
	watches := 0
	for _, a := range c.client.Actions() {
		if a.GetVerb() == "watch" {
			watches++
		}
	}
	if watches != 1 {
		t.Errorf("%d watches opened for two spawns, want the informer's one", watches)
	}

	if err := c.b.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if p, s := c.objects(t, id); p || s {
		t.Errorf("after Stop: pod %v, service %v still there", p, s)
	}
	if err := c.b.Stop(t.Context(), id); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// The stop's end is reported, once; the provisioner knows it by the
	// session's record.
	if e := c.nextExit(t); e.SessionID != id || e.Reason != messages.ReasonLost {
		t.Errorf("exit %+v, want %s lost", e, id)
	}
	c.noExit(t)
}

func TestStartFailsFast(t *testing.T) {
	waiting := func(reason string) func(*corev1.PodStatus) {
		return func(st *corev1.PodStatus) {
			st.Phase = corev1.PodPending
			st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "simulated"}}}}
		}
	}
	cases := map[string]func(*corev1.PodStatus){
		"ErrImagePull":     waiting("ErrImagePull"),
		"ImagePullBackOff": waiting("ImagePullBackOff"),
		"CrashLoopBackOff": waiting("CrashLoopBackOff"),
		"Unschedulable": func(st *corev1.PodStatus) {
			st.Phase = corev1.PodPending
			st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available"}}
		},
		"code 7": func(st *corev1.PodStatus) {
			st.Phase = corev1.PodFailed
			st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 7}}}}
		},
	}
	port, _ := statusServer(t, func(int) bool { return true })
	c := startCluster(t, podIPConfig(port))
	started := map[string]bool{}
	for want, set := range cases {
		id := messages.NewSessionID()
		started[id] = true
		go c.kubelet(t, id, set)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		_, err := c.b.Start(ctx, provisioner.Spec{SessionID: id})
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Start error %v", want, err)
		}
		if p, s := c.objects(t, id); p || s {
			t.Errorf("%s: failed spawn left pod %v, service %v", want, p, s)
		}
	}
	// Start reported why each failed. The deletion of what it cleaned up
	// may be reported after it returns, as any deletion is, and never
	// names another session or another cause.
	for {
		select {
		case e := <-c.exits:
			if !started[e.SessionID] || e.Reason != messages.ReasonLost {
				t.Errorf("unexpected exit %+v", e)
			}
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
}

func TestStartTimesOutWithLastState(t *testing.T) {
	c := startCluster(t, baseConfig())
	id := messages.NewSessionID()
	go c.kubelet(t, id, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodPending
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady"}}
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := c.b.Start(ctx, provisioner.Spec{SessionID: id})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ContainersNotReady") {
		t.Errorf("Start error %v, want a deadline naming the last state", err)
	}
	if p, s := c.objects(t, id); p || s {
		t.Errorf("timed-out spawn left pod %v, service %v", p, s)
	}
}

// managedPod creates a session pod directly, as an earlier provisioner did.
func (c *cluster) managedPod(t *testing.T, id string, mutate func(*corev1.Pod)) {
	t.Helper()
	pod := mustPodFor(t, c.b, provisioner.Spec{SessionID: id})
	if mutate != nil {
		mutate(pod)
	}
	if _, err := c.client.CoreV1().Pods("spawner").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) nextExit(t *testing.T) provisioner.Exit {
	t.Helper()
	select {
	case e := <-c.exits:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
		return provisioner.Exit{}
	}
}

func TestExitsOfPodsThatEnd(t *testing.T) {
	c := startCluster(t, baseConfig())
	exited := messages.NewSessionID()
	c.managedPod(t, exited, nil)
	c.kubelet(t, exited, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodFailed
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}}}
	})
	if e := c.nextExit(t); e.SessionID != exited || e.Reason != messages.ReasonExited || !strings.Contains(e.Detail, "code 3") {
		t.Errorf("exit %+v, want %s exited with code 3", e, exited)
	}

	lost := messages.NewSessionID()
	c.managedPod(t, lost, nil)
	if err := c.client.CoreV1().Pods("spawner").Delete(t.Context(), ObjectName(lost), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := c.nextExit(t); e.SessionID != lost || e.Reason != messages.ReasonLost {
		t.Errorf("exit %+v, want %s lost", e, lost)
	}

	stopped := messages.NewSessionID()
	c.managedPod(t, stopped, nil)
	if err := c.b.Stop(t.Context(), stopped); err != nil {
		t.Fatal(err)
	}
	if e := c.nextExit(t); e.SessionID != stopped || e.Reason != messages.ReasonLost {
		t.Errorf("exit %+v, want %s lost", e, stopped)
	}
	c.noExit(t)
}

func TestListOnlyLiveManagedPods(t *testing.T) {
	c := startCluster(t, baseConfig())
	live, terminating := messages.NewSessionID(), messages.NewSessionID()
	c.managedPod(t, live, nil)
	c.managedPod(t, terminating, func(p *corev1.Pod) { p.DeletionTimestamp = new(metav1.Now()) })
	c.managedPod(t, messages.NewSessionID(), func(p *corev1.Pod) { delete(p.Labels, LabelManagedBy) })
	c.managedPod(t, messages.NewSessionID(), func(p *corev1.Pod) { p.Labels[LabelSessionID] = "not-a-session" })
	var list []provisioner.Instance
	for range 100 {
		var err error
		if list, err = c.b.List(t.Context()); err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // Let the other pods reach the cache too.
	list, _ = c.b.List(t.Context())
	if len(list) != 1 || list[0].SessionID != live {
		t.Errorf("List = %+v, want only %s", list, live)
	}
}

// A pod that turns Ready but ends while its /status still says not
// listening fails the spawn at once, not at the deadline.
func TestStartFailsWhenAReadyPodEndsBeforeListening(t *testing.T) {
	port, calls := statusServer(t, func(int) bool { return false })
	c := startCluster(t, podIPConfig(port))
	id := messages.NewSessionID()
	go func() {
		c.kubelet(t, id, running("127.0.0.1"))
		for calls.Load() < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		c.kubelet(t, id, func(st *corev1.PodStatus) {
			st.Phase = corev1.PodFailed
			st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}}}
		})
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.b.Start(ctx, provisioner.Spec{SessionID: id})
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ended before it was ready") {
		t.Fatalf("Start error %v, want the pod's end", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the pod's end was noticed after %s", took)
	}
	if p, s := c.objects(t, id); p || s {
		t.Errorf("failed spawn left pod %v, service %v", p, s)
	}
}
